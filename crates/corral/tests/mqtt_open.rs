//! Corral as a broker people adopt in place of Mosquitto, with mosquitto_sub/pub: in open mode
//! (`--mqtt-allow-anonymous`) wildcard subscriptions are granted as any broker grants them, each
//! message checked against what the subscriber may read; overlapping subscriptions; the `$SYS`
//! tree; broker users with passwords and topic rules.

use corral_testkit::TestServer;
use reqwest::Method;
use serde_json::json;
use std::io::{BufRead, BufReader};
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

/// `mosquitto_pub` with MQTT 5; returns (exit success, what it printed).
fn try_publish(server: &TestServer, args: &[&str]) -> (bool, String) {
    let (host, port) = host_port(server);
    let out =
        Command::new("mosquitto_pub").args(["-h", &host, "-p", &port, "-V", "mqttv5", "-q", "1"]).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const PASSWORD: &str = "line three gateway passphrase";

async fn add_broker_user(server: &TestServer, body: serde_json::Value) {
    let (status, out) = server.admin(Method::POST, "/api/v1/broker-users", Some(body)).await;
    assert_eq!(status, 201, "{out}");
    assert!(out["user"].get("password_hash").is_none() && out["password"].is_null(), "{out}");
}

/// A gateway that is no registered device logs in with a user name and password, and may use
/// the topics its rules give it, `%u` and `%c` standing for its name and client id; a changed
/// rule ends its connection.
#[tokio::test]
async fn broker_users_use_the_topics_their_rules_give_them() {
    let server = TestServer::start(BIN).await;
    add_broker_user(
        &server,
        json!({"name": "line-3", "password": PASSWORD, "rules": [
            {"pattern": "plants/%u/#", "access": "readwrite"},
            {"pattern": "cells/%c/status", "access": "write"},
            {"pattern": "lobby/#", "access": "read"}
        ]}),
    )
    .await;
    let user = ["-u", "line-3", "-P", PASSWORD];
    let sub = subscribe(&server, &[&user[..], &["-i", "line-3-sub", "-t", "#", "-C", "2"]].concat()).await;
    let (ok, out) = try_publish(&server, &[&user[..], &["-i", "cell-9", "-t", "plants/line-3/temp", "-m", "21"]].concat());
    assert!(ok, "{out}");
    let (ok, out) = try_publish(&server, &[&user[..], &["-i", "cell-9", "-t", "cells/cell-9/status", "-m", "up"]].concat());
    assert!(ok, "%c is the client id: {out}");
    for topic in ["plants/line-4/temp", "cells/cell-8/status", "lobby/news", "devices/line-3/telemetry"] {
        let (_, out) = try_publish(&server, &[&user[..], &["-i", "cell-9", "-t", topic, "-m", "x"]].concat());
        assert!(out.to_lowercase().contains("not authorized"), "{topic}: {out}");
    }
    // An application publishes to the lobby (readable) and elsewhere (not).
    let admin = ["-u", "token", "-P", corral_testkit::ADMIN_TOKEN];
    for topic in ["plants/line-4/temp", "lobby/news"] {
        let (ok, out) = try_publish(&server, &[&admin[..], &["-t", topic, "-m", "from ops"]].concat());
        assert!(ok, "{out}");
    }
    assert_eq!(lines(&sub.wait_with_output().unwrap()), ["plants/line-3/temp 21", "lobby/news from ops"]);

    // Wrong password, unknown user: refused.
    let (ok, out) =
        try_publish(&server, &["-u", "line-3", "-P", "not the passphrase at all", "-t", "plants/line-3/x", "-m", "1"]);
    assert!(!ok && out.to_lowercase().contains("bad user name or password"), "{out}");
    let (ok, out) = try_publish(&server, &["-u", "nobody", "-P", PASSWORD, "-t", "lobby/x", "-m", "1"]);
    assert!(!ok && out.to_lowercase().contains("bad user name or password"), "{out}");

    // Changing its rules ends its connection (MQTT 5: DISCONNECT 0x98).
    let (host, port) = host_port(&server);
    let mut watcher = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub", "-d", "-V", "mqttv5", "-h", &host, "-p", &port, "-u", "line-3", "-P", PASSWORD])
        .args(["-t", "plants/line-3/#"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert!(out.by_ref().map_while(Result::ok).any(|l| l.contains("received SUBACK")));
    let patch = json!({"rules": [{"pattern": "plants/%u/#", "access": "read"}]});
    let (status, body) = server.admin(Method::PATCH, "/api/v1/broker-users/line-3", Some(patch)).await;
    assert_eq!(status, 200, "{body}");
    let disconnected =
        tokio::task::spawn_blocking(move || out.map_while(Result::ok).find(|l| l.contains("DISCONNECT"))).await.unwrap();
    assert_eq!(disconnected.as_deref(), Some("Received DISCONNECT (152)"));
    let _ = watcher.kill();
    let _ = watcher.wait();
    let (_, out) = try_publish(&server, &[&user[..], &["-t", "plants/line-3/temp", "-m", "22"]].concat());
    assert!(out.to_lowercase().contains("not authorized"), "read only now: {out}");
}

/// Tenant-scoped broker users read only their tenant's messages; tenant admins manage only
/// their tenant's users.
#[tokio::test]
async fn a_tenant_scoped_broker_user_reads_only_its_tenants_devices() {
    let server = TestServer::start(BIN).await;
    let acme = server.register_device("acme-1", json!({"tenant": "acme"})).await;
    let globex = server.register_device("globex-1", json!({"tenant": "globex"})).await;
    add_broker_user(
        &server,
        json!({"name": "acme-bridge", "password": PASSWORD, "tenant": "acme",
               "rules": [{"pattern": "devices/+/telemetry", "access": "read"}]}),
    )
    .await;
    let sub = subscribe(&server, &["-u", "acme-bridge", "-P", PASSWORD, "-t", "devices/+/telemetry", "-C", "1"]).await;
    for (id, token) in [("globex-1", &globex), ("acme-1", &acme)] {
        let topic = format!("devices/{id}/telemetry");
        publish(&server, &["-i", id, "-u", id, "-P", token, "-t", &topic, "-m", r#"{"v": 1}"#]);
    }
    assert_eq!(lines(&sub.wait_with_output().unwrap()), [r#"devices/acme-1/telemetry {"v": 1}"#]);

    let globex_admin = server.api_token("globex-admin", "admin", Some("globex")).await;
    let (status, body) = server.call(Method::GET, "/api/v1/broker-users", &globex_admin, None).await;
    assert_eq!((status, body["users"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
    let (status, _) = server.call(Method::DELETE, "/api/v1/broker-users/acme-bridge", &globex_admin, None).await;
    assert_eq!(status, 404);
}

/// Open mode, as Mosquitto's `allow_anonymous`: a user name with no password, or credentials
/// that name no one, connect as anonymous; a broker user's wrong password is still refused.
#[tokio::test]
async fn in_open_mode_credentials_that_name_no_one_are_anonymous() {
    let server = TestServer::start_with(BIN, &["--mqtt-allow-anonymous"]).await;
    add_broker_user(&server, json!({"name": "line-3", "password": PASSWORD, "rules": []})).await;
    let (ok, out) = try_publish(&server, &["-u", "someone", "-t", "lobby/a", "-m", "1"]);
    assert!(ok, "{out}");
    let (ok, out) = try_publish(&server, &["-u", "someone", "-P", "whatever they like", "-t", "lobby/a", "-m", "1"]);
    assert!(ok, "{out}");
    let (ok, out) = try_publish(&server, &["-u", "line-3", "-P", "not the passphrase at all", "-t", "lobby/a", "-m", "1"]);
    assert!(!ok && out.to_lowercase().contains("bad user name or password"), "{out}");
}
