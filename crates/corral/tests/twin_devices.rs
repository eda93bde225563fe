//! The device side of the twin on a real server, with real clients: paho-mqtt (3.1.1 and 5)
//! and mosquitto_sub devices receive their desired document on subscribe and each change made
//! over REST, including changes made while they were offline and before a `kill -9`; reported
//! patches over MQTT merge and delete keys; `twin/get` answers on the twin topic or the MQTT 5
//! response topic with the correlation data; nobody but the platform publishes desired.

use corral_testkit::{Script, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mqtt_twin.py");

fn twin_client(server: &TestServer, mode: &str, device: &str, token: &str, args: &[&str]) -> Command {
    let (host, port) = server.mqtt.rsplit_once(':').expect("MQTT address");
    let mut command = Command::new("python3");
    command.arg(CLIENT).args([mode, host, port, device, token]).args(args);
    command
}

/// A one-shot client (`report`, `publish`, `get`): its whole output, trimmed.
fn run(server: &TestServer, mode: &str, device: &str, token: &str, args: &[&str]) -> String {
    let out = twin_client(server, mode, device, token, args).output().expect("python3");
    assert!(out.status.success(), "{mode} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A device that subscribes to its desired document and prints each one it receives.
fn watch_desired(server: &TestServer, device: &str, token: &str, version: &str, session: &str) -> Script {
    let mut script = Script::spawn(
        twin_client(server, "desired", device, token, &[version, session]),
        &["disconnected", "refused", "timeout"],
    );
    assert_eq!(script.wait_for("subscribed"), "subscribed 1", "MQTT {version}");
    script
}

#[tokio::test]
async fn mqtt_devices_receive_their_desired_document_on_subscribe_and_every_change() {
    let server = TestServer::start(BIN).await;
    for version in ["5", "311"] {
        let id = format!("truck-{version}");
        let token = server.register_device(&id, json!({})).await;
        assert_eq!(server.patch_desired(&id, json!({"interval_s": 30})).await, 1);

        let mut device = watch_desired(&server, &id, &token, version, "clean");
        assert_eq!(device.wait_for("desired"), r#"desired 1 {"interval_s":30}"#, "the current document on subscribe");
        server.patch_desired(&id, json!({"fw": "2.1"})).await;
        assert_eq!(device.wait_for("desired"), r#"desired 2 {"fw":"2.1","interval_s":30}"#, "each change, whole");
        server.patch_desired(&id, json!({"interval_s": null})).await;
        assert_eq!(device.wait_for("desired"), r#"desired 3 {"fw":"2.1"}"#);
        assert!(device.finish().is_empty(), "nothing else arrived");
    }

    // A plain mosquitto_sub device gets the same document.
    let token = server.register_device("meter-1", json!({})).await;
    server.patch_desired("meter-1", json!({"tariff": "night"})).await;
    let (host, port) = server.mqtt.rsplit_once(':').unwrap();
    let out = Command::new("mosquitto_sub")
        .args(["-h", host, "-p", port, "-i", "meter-1", "-u", "meter-1", "-P", &token, "-q", "1"])
        .args(["-t", "devices/meter-1/twin/desired", "-C", "1", "-W", "15"])
        .output()
        .expect("mosquitto_sub");
    let received: Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
    assert_eq!(received, json!({"version": 1, "desired": {"tariff": "night"}}));
}

#[tokio::test]
async fn a_change_made_offline_or_just_before_a_kill_9_reaches_the_device_when_it_returns() {
    let mut server = TestServer::start(BIN).await;
    let token = server.register_device("reefer-1", json!({})).await;
    let clean = server.register_device("reefer-2", json!({})).await;
    server.patch_desired("reefer-1", json!({"setpoint_c": -18})).await;

    // A persistent session: subscribed once, then away.
    let mut away = watch_desired(&server, "reefer-1", &token, "5", "persistent");
    assert_eq!(away.wait_for("desired"), r#"desired 1 {"setpoint_c":-18}"#);
    assert!(away.finish().is_empty());

    // Changed while it is offline, then the server dies without a goodbye right after answering.
    server.patch_desired("reefer-1", json!({"setpoint_c": -20})).await;
    server.patch_desired("reefer-2", json!({"defrost": "auto"})).await;
    server.kill9();
    server.restart();

    // The persistent session resumes (its queued change, or the retained document when it
    // subscribes again: either way the latest version first, nothing older).
    let mut back = watch_desired(&server, "reefer-1", &token, "5", "persistent");
    assert_eq!(back.wait_for("desired"), r#"desired 2 {"setpoint_c":-20}"#);
    back.finish();
    // A device with a clean session finds the document made just before the kill.
    let mut fresh = watch_desired(&server, "reefer-2", &clean, "311", "clean");
    assert_eq!(fresh.wait_for("desired"), r#"desired 1 {"defrost":"auto"}"#);
    fresh.finish();
}

#[tokio::test]
async fn reported_patches_over_mqtt_merge_delete_keys_and_bad_ones_store_nothing() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("hvac-1", json!({})).await;
    server.patch_desired("hvac-1", json!({"fw": "2.1", "mode": "eco"})).await;

    let report = |version: &str, patch: &str| run(&server, "report", "hvac-1", &token, &[version, patch]);
    assert_eq!(report("5", r#"{"fw": "2.0", "mode": "eco", "battery": 80}"#), "puback 0");
    assert_eq!(report("311", r#"{"battery": null}"#), "puback 0");
    let state = server.twin("hvac-1").await;
    assert_eq!(state["reported"]["document"], json!({"fw": "2.0", "mode": "eco"}));
    assert_eq!(state["reported"]["version"], 2);
    assert_eq!(state["delta"], json!({"fw": "2.1"}));

    // Not a JSON object: MQTT 5 gets 0x99 (payload format invalid), 3.1.1 is disconnected.
    assert_eq!(report("5", "[1, 2]"), "puback 153");
    assert!(report("311", "{not json").starts_with("disconnected"), "3.1.1 has no negative PUBACK");
    let over = format!(r#"{{"blob": "{}"}}"#, "x".repeat(40 * 1024));
    assert_eq!(report("5", &over), "puback 153", "over the 32 KiB document limit");
    assert_eq!(server.twin("hvac-1").await["reported"]["version"], 2, "nothing stored");
}

/// A device that sends its reports back to back, not waiting for each PUBACK (what a firmware
/// agent does when it reports `downloaded`, `installing` and `succeeded` in a row), finds them
/// applied in the order it sent them: the twin ends with the last, on 3.1.1 and on 5.
#[tokio::test]
async fn reports_sent_back_to_back_are_applied_in_the_order_they_were_sent() {
    let server = TestServer::start(BIN).await;
    for (device, version) in [("burst-5", "5"), ("burst-311", "311")] {
        let token = server.register_device(device, json!({})).await;
        assert_eq!(run(&server, "burst", device, &token, &[version, "60"]), "pubacks 60");
        let reported = &server.twin(device).await["reported"];
        assert_eq!(reported["document"], json!({"step": 60, "progress": {"state": "step-60"}}), "{device}: {reported}");
        assert_eq!(reported["version"], 60, "{device}: {reported}");
    }
}

#[tokio::test]
async fn twin_get_answers_the_device_on_its_twin_topic_or_its_response_topic() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("pump-1", json!({})).await;
    for patch in [json!({"rpm": 1000}), json!({"rpm": 1200}), json!({"mode": "auto"})] {
        server.patch_desired("pump-1", patch).await;
    }

    // MQTT 5 with a response topic and correlation data: the answer goes there, with the data.
    let out = run(&server, "get", "pump-1", &token, &["5", "", "devices/pump-1/twin/answers/7", "q-7"]);
    let (head, body) = out.split_at(out.find("{").unwrap_or_else(|| panic!("a JSON answer, not {out:?}")));
    assert_eq!(head.trim(), "answer devices/pump-1/twin/answers/7 q-7");
    let whole: Value = serde_json::from_str(body).unwrap();
    assert_eq!(whole["desired"]["version"], 3);
    assert_eq!(whole["desired"]["document"], json!({"rpm": 1200, "mode": "auto"}));

    // 3.1.1, changes since version 1: the patches that lead to version 3, on devices/<id>/twin.
    let out = run(&server, "get", "pump-1", &token, &["311", r#"{"since": 1}"#]);
    let (head, body) = out.split_at(out.find("{").unwrap_or_else(|| panic!("a JSON answer, not {out:?}")));
    assert_eq!(head.trim(), "answer devices/pump-1/twin -");
    let changes: Value = serde_json::from_str(body).unwrap();
    assert_eq!(changes["kind"], "patches");
    assert_eq!(changes["version"], 3);
    let patches: Vec<Value> = changes["patches"].as_array().unwrap().iter().map(|p| p["patch"].clone()).collect();
    assert_eq!(patches, [json!({"rpm": 1200}), json!({"mode": "auto"})]);

    // A response topic outside the device's twin is not honoured: the answer comes home.
    let out = run(&server, "get", "pump-1", &token, &["5", "{}", "devices/other/twin/x", "q-8"]);
    assert!(out.starts_with("answer devices/pump-1/twin q-8 {"), "{out}");
    // A malformed request gets an error answer, not silence.
    let out = run(&server, "get", "pump-1", &token, &["5", r#"{"since": "one"}"#]);
    assert!(out.starts_with("answer devices/pump-1/twin - {\"error\""), "{out}");
}

#[tokio::test]
async fn only_the_platform_publishes_a_devices_desired_document() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("lock-1", json!({})).await;
    server.patch_desired("lock-1", json!({"locked": true})).await;
    let forged = r#"{"version": 99, "desired": {"locked": false}}"#;
    assert_eq!(run(&server, "publish", "lock-1", &token, &["5", "devices/lock-1/twin/desired", forged]), "puback 135");
    let mut device = watch_desired(&server, "lock-1", &token, "5", "clean");
    assert_eq!(device.wait_for("desired"), r#"desired 1 {"locked":true}"#, "the platform's document, unchanged");
    device.finish();
}

#[tokio::test]
async fn a_device_moved_to_another_profile_receives_that_profiles_defaults() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("hvac-7", json!({"profile": "office"})).await;
    server.register_device("hvac-8", json!({"profile": "lab"})).await;
    for (profile, defaults) in [("office", json!({"setpoint_c": 21})), ("lab", json!({"setpoint_c": 18}))] {
        let path = format!("/api/v1/profiles/{profile}/twin/desired");
        let (status, out) = server.admin(Method::PATCH, &path, Some(defaults)).await;
        assert_eq!(status, 200, "{out}");
    }
    let mut device = watch_desired(&server, "hvac-7", &token, "5", "clean");
    assert_eq!(device.wait_for("desired"), r#"desired 1 {"setpoint_c":21}"#, "its profile's defaults");

    let (status, out) = server.admin(Method::PATCH, "/api/v1/devices/hvac-7", Some(json!({"profile": "lab"}))).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(device.wait_for("desired"), r#"desired 2 {"setpoint_c":18}"#, "the new profile's, as a new version");
    device.finish();
}

#[tokio::test]
async fn an_http_device_catches_up_with_the_changes_since_the_version_it_applied() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("gauge-1", json!({})).await;
    for patch in [json!({"a": 1}), json!({"b": 2}), json!({"a": null})] {
        server.patch_desired("gauge-1", patch).await;
    }
    let (status, out) = server.call(Method::GET, "/api/v1/devices/gauge-1/twin?since=1", &token, None).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["kind"], "patches");
    assert_eq!(out["version"], 3);
    let patches: Vec<Value> = out["patches"].as_array().unwrap().iter().map(|p| p["patch"].clone()).collect();
    assert_eq!(patches, [json!({"b": 2}), json!({"a": null})], "null in a patch deletes the key");
    let (_, out) = server.call(Method::GET, "/api/v1/devices/gauge-1/twin?since=3", &token, None).await;
    assert_eq!(out["patches"], json!([]), "up to date");
    let (_, out) = server.call(Method::GET, "/api/v1/devices/gauge-1/twin?since=9", &token, None).await;
    assert_eq!((out["kind"].as_str(), out["reason"].as_str()), (Some("full"), Some("ahead_of_server")));
}
