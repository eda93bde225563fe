//! Corral as a broker people adopt in place of Mosquitto, in open mode
//! (`--mqtt-allow-anonymous`), with mosquitto_sub/pub: wildcard subscriptions are granted as
//! any broker grants them, and each message is checked against what the subscriber may read.

use corral_testkit::TestServer;
use reqwest::Method;
use serde_json::json;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

fn host_port(server: &TestServer) -> (String, String) {
    let (host, port) = server.mqtt.rsplit_once(':').expect("MQTT address");
    (host.to_string(), port.to_string())
}

/// `mosquitto_pub ARGS` against the server; panics with its output if it fails.
fn publish(server: &TestServer, args: &[&str]) {
    let (host, port) = host_port(server);
    let out = Command::new("mosquitto_pub").args(["-h", &host, "-p", &port, "-q", "1"]).args(args).output().unwrap();
    assert!(out.status.success(), "mosquitto_pub {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `mosquitto_sub -v ARGS`, MQTT 5, started; give it time to subscribe before publishing.
async fn subscribe(server: &TestServer, args: &[&str]) -> Child {
    let (host, port) = host_port(server);
    let child = Command::new("mosquitto_sub")
        .args(["-h", &host, "-p", &port, "-V", "mqttv5", "-v", "-W", "20"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed");
    tokio::time::sleep(Duration::from_millis(700)).await;
    child
}

fn lines(out: &Output) -> Vec<String> {
    assert!(out.status.success(), "mosquitto_sub: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}

#[tokio::test]
async fn anonymous_wildcards_are_granted_and_carry_only_what_no_tenant_owns() {
    let server = TestServer::start_with(BIN, &["--mqtt-allow-anonymous"]).await;
    let device = server.register_device("truck-1", json!({})).await;
    let (status, created) =
        server.admin(Method::POST, "/api/v1/tokens", Some(json!({"name": "ops-board", "role": "viewer"}))).await;
    assert_eq!(status, 201, "{created}");
    let app = created["token"].as_str().unwrap().to_string();

    // `#` and `+/+` overlap: each message arrives once (the spec's single copy).
    let anonymous = subscribe(&server, &["-t", "#", "-t", "+/+", "-t", "+/truck-1/telemetry", "-C", "2"]).await;
    let application = subscribe(&server, &["-u", "ops-board", "-P", &app, "-t", "#", "-C", "2"]).await;
    publish(
        &server,
        &["-i", "truck-1", "-u", "truck-1", "-P", &device, "-t", "devices/truck-1/telemetry", "-m", r#"{"speed": 3}"#],
    );
    publish(&server, &["-t", "lobby/chat", "-m", "hello"]);
    publish(&server, &["-t", "lobby/done", "-m", "bye"]);

    let anonymous = lines(&anonymous.wait_with_output().unwrap());
    assert_eq!(anonymous, ["lobby/chat hello", "lobby/done bye"], "a device's telemetry is not for anonymous clients");
    let application = lines(&application.wait_with_output().unwrap());
    assert_eq!(application, [r#"devices/truck-1/telemetry {"speed": 3}"#, "lobby/chat hello"]);
}

#[tokio::test]
async fn overlapping_subscriptions_get_one_copy_or_one_per_subscription_when_configured() {
    for (copy_per_subscription, copies) in [("false", 1), ("true", 2)] {
        let setting = format!("mqtt.copy_per_subscription={copy_per_subscription}");
        let server = TestServer::start_with(BIN, &["--mqtt-allow-anonymous", "--set", &setting]).await;
        let sub = subscribe(&server, &["-t", "#", "-t", "lobby/+", "-W", "3"]).await;
        publish(&server, &["-t", "lobby/chat", "-m", "hello"]);
        // -W ends mosquitto_sub after 3 s with status 27; what it printed by then counts.
        let out = sub.wait_with_output().unwrap();
        let received = String::from_utf8_lossy(&out.stdout).lines().filter(|l| *l == "lobby/chat hello").count();
        assert_eq!(received, copies, "copy_per_subscription={copy_per_subscription}");
    }
}

#[tokio::test]
async fn monitoring_tools_read_the_sys_tree_as_from_mosquitto() {
    let server = TestServer::start_with(BIN, &["--mqtt-allow-anonymous", "--set", "mqtt.sys_interval_secs=1"]).await;
    publish(&server, &["-t", "lobby/chat", "-m", "hello"]);
    // Retained: a monitor that subscribes gets the values at once (from start-up here), then
    // the next publication a second later; the last value of each topic counts.
    let sys = subscribe(&server, &["-t", "$SYS/broker/#", "-C", "28", "-F", "%t|%p"]).await;
    let tree: std::collections::HashMap<String, String> = lines(&sys.wait_with_output().unwrap())
        .into_iter()
        .filter_map(|l| l.split_once('|').map(|(t, v)| (t.to_string(), v.to_string())))
        .collect();
    assert_eq!(tree.len(), 14, "{tree:?}");
    assert!(tree.contains_key("$SYS/broker/retained messages/count"), "{tree:?}");
    assert_eq!(tree.get("$SYS/broker/clients/connected").map(String::as_str), Some("1"), "the monitor itself: {tree:?}");
    assert!(tree["$SYS/broker/uptime"].ends_with(" seconds"), "{tree:?}");
    assert!(tree["$SYS/broker/version"].starts_with("corral "), "{tree:?}");
    let received: u64 = tree["$SYS/broker/publish/messages/received"].parse().unwrap();
    let bytes: u64 = tree["$SYS/broker/bytes/received"].parse().unwrap();
    assert!(received >= 1 && bytes > 0, "{tree:?}");
    // A device cannot read it (it is no device's data).
    let token = server.register_device("truck-2", json!({})).await;
    let (host, port) = host_port(&server);
    let out = Command::new("mosquitto_sub")
        .args(["-h", &host, "-p", &port, "-V", "mqttv5", "-i", "truck-2", "-u", "truck-2", "-P", &token])
        .args(["-t", "$SYS/broker/uptime", "-C", "1", "-W", "3"])
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}
