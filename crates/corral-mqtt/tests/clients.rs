//! Interoperability with real clients: Mosquitto's command-line clients and Python paho-mqtt
//! 2.x, each under MQTT 3.1.1 and 5. The test script installs them
//! (`apt-get install -y mosquitto-clients`, `pip install paho-mqtt==2.1.0`); a missing client
//! fails the test rather than skipping it.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use corral_mqtt::BrokerConfig;

fn require(program: &str, probe: &[&str]) {
    let ok = Command::new(program).args(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(ok, "{program} is not installed: apt-get install -y mosquitto-clients; pip install paho-mqtt==2.1.0");
}

fn run(program: &str, args: &[String]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Starts mosquitto_sub in the background, waiting for `count` messages.
fn spawn_sub(port: u16, version: &str, extra: &[&str], count: usize) -> std::process::Child {
    let mut a = args(&["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version, "-C", &count.to_string(), "-W", "10", "-v"]);
    a.extend(args(extra));
    Command::new("mosquitto_sub").args(&a).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn publish(port: u16, version: &str, extra: &[&str]) {
    let mut a = args(&["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version]);
    a.extend(args(extra));
    let out = run("mosquitto_pub", &a);
    assert!(out.status.success(), "mosquitto_pub {a:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_publish_and_subscribe_under_both_versions() {
    require("mosquitto_pub", &["--help"]);
    let t = start(open_config()).await;
    let port = t.addr.port();
    for version in ["mqttv311", "mqttv5"] {
        for qos in ["0", "1", "2"] {
            let topic = format!("mosq/{version}/{qos}");
            let sub = spawn_sub(port, version, &["-t", &topic, "-q", qos], 3);
            tokio::time::sleep(Duration::from_millis(400)).await;
            for i in 0..3 {
                publish(port, version, &["-t", &topic, "-q", qos, "-m", &format!("hello-{i}")]);
            }
            let out = tokio::task::spawn_blocking(move || sub.wait_with_output()).await.unwrap().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{version} qos {qos}: {text} {}", String::from_utf8_lossy(&out.stderr));
            let want: String = (0..3).map(|i| format!("{topic} hello-{i}\n")).collect();
            assert_eq!(text, want);
        }
        // Retained: published first, received by a later subscriber with -R off.
        let topic = format!("mosq/{version}/retained");
        publish(port, version, &["-t", &topic, "-q", "1", "-r", "-m", "kept"]);
        let sub = spawn_sub(port, version, &["-t", &topic], 1);
        let out = tokio::task::spawn_blocking(move || sub.wait_with_output()).await.unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{topic} kept\n"));
        // Large payload through a QoS 1 path.
        let big = "x".repeat(200_000);
        let topic = format!("mosq/{version}/big");
        let sub = spawn_sub(port, version, &["-t", &topic, "-q", "1"], 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &big).unwrap();
        publish(port, version, &["-t", &topic, "-q", "1", "-f", file.path().to_str().unwrap()]);
        let out = tokio::task::spawn_blocking(move || sub.wait_with_output()).await.unwrap().unwrap();
        assert_eq!(out.stdout.len(), topic.len() + 1 + big.len() + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_with_credentials_acl_and_platform_hook() {
    require("mosquitto_pub", &["--help"]);
    let t = start(BrokerConfig::default()).await;
    let port = t.addr.port();
    for version in ["mqttv311", "mqttv5"] {
        let sub = spawn_sub(port, version, &["-u", "admin", "-P", "secret", "-i", "app", "-t", "devices/+/telemetry"], 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        publish(
            port,
            version,
            &["-u", "dev1", "-P", "pw1", "-i", "dev1", "-t", "devices/dev1/telemetry", "-q", "1", "-m", "{\"t\":21.5}"],
        );
        let out = tokio::task::spawn_blocking(move || sub.wait_with_output()).await.unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "devices/dev1/telemetry {\"t\":21.5}\n");
        // Wrong password: refused.
        let a = args(&[
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            version,
            "-u",
            "dev1",
            "-P",
            "nope",
            "-t",
            "devices/dev1/telemetry",
            "-m",
            "x",
        ]);
        let out = run("mosquitto_pub", &a);
        assert!(!out.status.success(), "bad password accepted");
        // A device subscribing outside its topics is refused by SUBACK.
        let a = args(&[
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            version,
            "-u",
            "dev1",
            "-P",
            "pw1",
            "-i",
            "dev1",
            "-t",
            "devices/dev2/#",
            "-W",
            "2",
            "-C",
            "1",
        ]);
        let out = run("mosquitto_sub", &a);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success() || text.contains("denied"), "{text}");
    }
    assert_eq!(t.hooks.platform_topics(), vec!["devices/dev1/telemetry"; 2]);
    assert_eq!(t.broker.metrics().denied_subscribe, 2);
}

fn paho(scenario: &str, port: u16, version: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_client.py");
    let out = Command::new("python3").args([script, scenario, &port.to_string(), version]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("OK"), "paho {scenario} v{version}: {text}");
}

fn require_paho() {
    let ok = Command::new("python3")
        .args(["-c", "import paho.mqtt; assert paho.mqtt.__version__.startswith('2.')"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "paho-mqtt 2.x missing: pip install paho-mqtt==2.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_pubsub_all_qos_both_versions() {
    require_paho();
    let t = start(open_config()).await;
    for v in ["311", "5"] {
        let port = t.addr.port();
        tokio::task::spawn_blocking(move || paho("pubsub", port, v)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_acl_reason_codes_both_versions() {
    require_paho();
    let t = start(BrokerConfig::default()).await;
    for v in ["311", "5"] {
        let port = t.addr.port();
        tokio::task::spawn_blocking(move || paho("acl", port, v)).await.unwrap();
    }
    assert_eq!(t.broker.metrics().denied_publish, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v5_properties_subscription_ids_and_shared_subscriptions() {
    require_paho();
    let t = start(open_config()).await;
    let port = t.addr.port();
    tokio::task::spawn_blocking(move || paho("v5", port, "5")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_persistent_session_gets_offline_messages_both_versions() {
    require_paho();
    let t = start(open_config()).await;
    for v in ["311", "5"] {
        let port = t.addr.port();
        tokio::task::spawn_blocking(move || paho("persistent", port, v)).await.unwrap();
    }
}
