//! Tracked commands to MQTT devices on a real server, with paho-mqtt devices (3.1.1 and 5): a
//! command made over REST reaches the device on `devices/<id>/commands/<command-id>` (MQTT 5:
//! with its response topic and correlation data), is `delivered` once the device's PUBACK came,
//! and is completed by the device's answer; a device that was offline gets it when it subscribes;
//! a persistent session gets it exactly once across a `kill -9`; an expired command never
//! arrives.

use corral_testkit::{Script, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mqtt_commands.py");

/// A paho device subscribed to its commands, answering each `answer_after_s` after it arrived
/// with `status` (`none`: never).
fn device(server: &TestServer, id: &str, token: &str, version: &str, session: &str, answer_after_s: u32, status: &str) -> Script {
    let (host, port) = server.mqtt.rsplit_once(':').expect("MQTT address");
    let mut command = Command::new("python3");
    command.arg(CLIENT).args(["device", host, port, id, token, version, session, &answer_after_s.to_string(), status]);
    let mut script = Script::spawn(command, &["disconnected", "refused", "timeout", "mismatch"]);
    assert_eq!(script.wait_for("subscribed"), "subscribed 1", "{id} over MQTT {version}");
    script
}

/// `POST /api/v1/devices/{device}/commands` as admin; the new command's id.
async fn create(server: &TestServer, device: &str, name: &str, payload: Value, timeout_s: u64) -> String {
    let body = json!({"name": name, "payload": payload, "timeout": timeout_s});
    let (status, out) = server.admin(Method::POST, &format!("/api/v1/devices/{device}/commands"), Some(body)).await;
    assert_eq!(status, 201, "{out}");
    out["id"].as_str().unwrap_or_else(|| panic!("a command id in {out}")).to_string()
}

async fn command(server: &TestServer, id: &str) -> Value {
    let (status, out) = server.admin(Method::GET, &format!("/api/v1/commands/{id}"), None).await;
    assert_eq!(status, 200, "{out}");
    out
}

/// The command once it reached `state`, polled (a device's steps are its own, not the test's).
async fn reaches(server: &TestServer, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = command(server, id).await;
        if now["state"] == state {
            return now;
        }
        assert!(Instant::now() < deadline, "command {id} never became {state}: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many times `script` printed that it received command `id`.
fn received(lines: &[String], id: &str) -> usize {
    lines.iter().filter(|line| line.starts_with(&format!("command {id} "))).count()
}

#[tokio::test]
async fn an_mqtt_device_receives_a_command_made_over_rest_and_its_answer_completes_it() {
    let server = TestServer::start(BIN).await;
    for version in ["5", "311"] {
        let id = format!("valve-{version}");
        let token = server.register_device(&id, json!({})).await;
        // It answers two seconds after the command came: long enough to see it `delivered`.
        let mut valve = device(&server, &id, &token, version, "clean", 2, "succeeded");
        let command_id = create(&server, &id, "open", json!({"percent": 40}), 60).await;

        let line = valve.wait_for("command");
        let (response_topic, correlation) = match version {
            "5" => (format!("devices/{id}/commands/{command_id}/response"), command_id.clone()),
            _ => ("-".to_string(), "-".to_string()),
        };
        assert_eq!(line, format!(r#"command {command_id} open {{"percent":40}} {response_topic} {correlation}"#));
        let delivered = reaches(&server, &command_id, "delivered").await;
        assert_eq!(delivered["door"], "mqtt");
        assert!(delivered["sent_at_ms"].is_i64() && delivered["delivered_at_ms"].is_i64(), "{delivered}");

        // The device answers on the response topic it was given (3.1.1: the conventional one).
        let answered = valve.wait_for("answered");
        assert_eq!(answered, format!("answered {command_id} devices/{id}/commands/{command_id}/response"));
        let done = reaches(&server, &command_id, "succeeded").await;
        assert_eq!(done["response"], json!({"done": "open"}));
        assert_eq!(received(&valve.finish(), &command_id), 0, "no second copy");
    }
}

#[tokio::test]
async fn a_command_made_while_the_device_is_offline_reaches_it_when_it_subscribes() {
    let server = TestServer::start(BIN).await;
    for version in ["5", "311"] {
        let id = format!("sensor-{version}");
        let token = server.register_device(&id, json!({})).await;
        let command_id = create(&server, &id, "calibrate", json!({"offset": 0.5}), 60).await;
        assert_eq!(command(&server, &command_id).await["state"], "queued", "nobody to carry it to");

        let mut sensor = device(&server, &id, &token, version, "clean", 0, "failed");
        let line = sensor.wait_for("command");
        assert!(line.starts_with(&format!("command {command_id} calibrate {{\"offset\":0.5}}")), "{line}");
        let done = reaches(&server, &command_id, "failed").await;
        assert_eq!(done["door"], "mqtt", "{done}");
        assert_eq!(received(&sensor.finish(), &command_id), 0, "once");
    }
}

#[tokio::test]
async fn a_persistent_session_gets_a_command_exactly_once_across_a_kill_9() {
    let mut server = TestServer::start(BIN).await;
    let devices = [("pump-5", "5"), ("pump-311", "311")];
    let mut tokens = Vec::new();
    for (id, version) in devices {
        let token = server.register_device(id, json!({})).await;
        // Subscribed once, then away: the session keeps the subscription.
        let away = device(&server, id, &token, version, "persistent", 0, "succeeded");
        assert!(away.finish().iter().all(|line| !line.starts_with("command")));
        tokens.push(token);
    }
    let mut commands = Vec::new();
    for (id, _) in devices {
        let command_id = create(&server, id, "prime", json!({"litres": 2}), 120).await;
        // Waiting in the broker's persistent session is not sent yet.
        assert_eq!(command(&server, &command_id).await["state"], "queued");
        commands.push(command_id);
    }
    server.kill9();
    server.restart();

    for (((id, version), token), command_id) in devices.iter().zip(&tokens).zip(&commands) {
        let mut back = device(&server, id, token, version, "persistent", 0, "succeeded");
        // The session's copy may come before the SUBACK.
        if !back.seen.iter().any(|line| line.starts_with("answered")) {
            back.wait_for("answered");
        }
        reaches(&server, command_id, "succeeded").await;
        // Room for a second copy to arrive (the session's own, or the tracker's hand-over).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut lines = back.seen.clone();
        lines.extend(back.finish());
        assert_eq!(received(&lines, command_id), 1, "MQTT {version}: exactly once; {lines:?}");
    }
}

#[tokio::test]
async fn an_expired_command_never_reaches_a_device_that_connects_after_it_expired() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("late-1", json!({})).await;
    let command_id = create(&server, "late-1", "reboot", Value::Null, 1).await;
    let expired = reaches(&server, &command_id, "expired").await;
    assert!(expired["delivered_at_ms"].is_null(), "{expired}");

    let late = device(&server, "late-1", &token, "5", "clean", 0, "succeeded");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = late.finish();
    assert_eq!(received(&lines, &command_id), 0, "{lines:?}");
    assert_eq!(command(&server, &command_id).await["state"], "expired");
}
