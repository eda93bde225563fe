//! MQTT into the platform, with real clients (mosquitto_pub/sub, paho-mqtt) against the real
//! binary: device identity from the registry, telemetry through the same pipeline as HTTP and
//! durable before the PUBACK, least-privilege topics, applications subscribing by API token,
//! sessions cut when a device's credentials change, MQTT over WebSocket at `/mqtt` and over TLS.

use corral_testkit::TestServer;
use reqwest::Method;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const PAHO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mqtt_clients.py");

fn host_port(server: &TestServer) -> (String, String) {
    let (host, port) = server.mqtt.rsplit_once(':').expect("MQTT address");
    (host.to_string(), port.to_string())
}

/// `mosquitto_pub` once; returns (exit success, stdout + stderr).
fn mosquitto_pub(server: &TestServer, args: &[&str]) -> (bool, String) {
    let (host, port) = host_port(server);
    let out = Command::new("mosquitto_pub")
        .args(["-h", &host, "-p", &port])
        .args(args)
        .output()
        .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A paho scenario from `clients/mqtt_clients.py`; its one line of output.
fn paho(server: &TestServer, args: &[&str]) -> String {
    let (host, port) = host_port(server);
    let out = Command::new("python3").arg(PAHO).arg(args[0]).args([&host, &port]).args(&args[1..]).output().expect("python3");
    assert!(out.status.success(), "paho: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn mosquitto_pub_telemetry_is_durable_and_queryable_in_both_versions() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("reefer-1", json!({"site": "dock"})).await;
    for (version, temperature) in [("mqttv311", 4.5), ("mqttv5", 5.5)] {
        let payload = format!(r#"{{"temperature": {temperature}, "door_open": false}}"#);
        let (ok, out) = mosquitto_pub(
            &server,
            &[
                "-V",
                version,
                "-q",
                "1",
                "-i",
                "reefer-1",
                "-u",
                "reefer-1",
                "-P",
                &token,
                "-t",
                "devices/reefer-1/telemetry",
                "-m",
                &payload,
            ],
        );
        assert!(ok, "{version}: {out}");
    }
    let (ok, out) = mosquitto_pub(
        &server,
        &[
            "-V",
            "mqttv5",
            "-q",
            "2",
            "-i",
            "reefer-1",
            "-u",
            "reefer-1",
            "-P",
            &token,
            "-t",
            "devices/reefer-1/telemetry/compressor",
            "-m",
            r#"{"rpm": 1450}"#,
        ],
    );
    assert!(ok, "{out}");
    let rows = server
        .query("SELECT t.temperature, t.door_open, d.site FROM telemetry t JOIN devices d USING (device) ORDER BY time")
        .await;
    assert_eq!(rows, vec![vec![json!(4.5), json!(false), json!("dock")], vec![json!(5.5), json!(false), json!("dock")]]);
    assert_eq!(server.query("SELECT device, rpm FROM compressor").await, vec![vec![json!("reefer-1"), json!(1450.0)]]);
    // The MQTT door updates last_seen like HTTP does.
    let (_, device) = server.admin(Method::GET, "/api/v1/devices/reefer-1", None).await;
    assert!(device["last_seen"].is_string(), "{device}");
}

#[tokio::test]
async fn senml_bad_payloads_and_foreign_topics_get_mqtt5_reason_codes_and_store_nothing() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("meter-1", json!({})).await;
    server.register_device("meter-2", json!({})).await;
    let publish = |topic: &str, payload: &str, content_type: &str| {
        let mut args = vec!["publish", "meter-1", "meter-1", &token, "5", topic, payload];
        if !content_type.is_empty() {
            args.push(content_type);
        }
        paho(&server, &args)
    };
    let senml = r#"[{"bn": "urn:meter-1:", "bt": 1795255200, "n": "power", "u": "W", "v": 230.5}]"#;
    assert_eq!(publish("devices/meter-1/telemetry", senml, "application/senml+json"), "puback 0");
    assert_eq!(publish("devices/meter-1/telemetry", "{not json", ""), "puback 153", "0x99 payload format invalid");
    assert_eq!(publish("devices/meter-2/telemetry", r#"{"power": 1}"#, ""), "puback 135", "0x87: another device's topic");
    assert_eq!(publish("devices/meter-1/telemetry/devices", r#"{"power": 1}"#, ""), "puback 144", "0x90: reserved table name");
    let rows = server.query("SELECT device, time, \"urn:meter-1:power\" FROM telemetry").await;
    assert_eq!(rows, vec![vec![json!("meter-1"), json!("2026-11-21T10:00:00Z"), json!(230.5)]]);
    // MQTT 3.1.1 has no negative PUBACK: the publisher is disconnected instead, nothing stored.
    assert_eq!(
        paho(&server, &["publish", "meter-1", "meter-1", &token, "311", "devices/meter-1/telemetry", "[1,", ""]),
        "closed"
    );
    assert_eq!(server.count("telemetry").await, 1);
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("corral_mqtt_denied_total{what=\"publish\"} 1"), "{metrics}");
    assert!(metrics.contains("corral_mqtt_platform_refused_total 3"), "{metrics}");
}

#[tokio::test]
async fn wrong_credentials_and_quarantined_devices_are_refused_at_connect() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("pump-1", json!({})).await;
    let connect = |client: &str, user: &str, password: &str, version: &str| {
        paho(&server, &["publish", client, user, password, version, &format!("devices/{client}/telemetry"), "{}"])
    };
    // paho reports 3.1.1 CONNACK codes as their MQTT 5 equivalents (4 → 134, 5 → 135).
    assert_eq!(connect("pump-1", "pump-1", "cdt_wrong", "5"), "refused 134", "0x86 bad user name or password");
    assert_eq!(connect("pump-1", "pump-1", "cdt_wrong", "311"), "refused 134");
    assert_eq!(connect("pump-2", "pump-1", &token, "5"), "refused 133", "0x85: client id must be the device id");
    assert_eq!(connect("pump-1", "pump-1", "", "5"), "refused 134");
    let (status, _) = server.admin(Method::PATCH, "/api/v1/devices/pump-1", Some(json!({"status": "quarantined"}))).await;
    assert_eq!(status, 200);
    assert_eq!(connect("pump-1", "pump-1", &token, "5"), "refused 135", "0x87 not authorized");
    assert_eq!(connect("pump-1", "pump-1", &token, "311"), "refused 135");
    assert_eq!(server.count("telemetry").await, 0);
}

#[tokio::test]
async fn an_application_token_subscribes_to_every_devices_telemetry_of_its_tenant() {
    let server = TestServer::start(BIN).await;
    for tenant in ["acme", "globex"] {
        let (status, body) = server.admin(Method::POST, "/api/v1/tenants", Some(json!({"id": tenant}))).await;
        assert_eq!(status, 201, "{body}");
    }
    let acme_token = server.register_device("truck-a", json!({"tenant": "acme"})).await;
    let globex_token = server.register_device("truck-g", json!({"tenant": "globex"})).await;
    let (status, created) = server
        .admin(Method::POST, "/api/v1/tokens", Some(json!({"name": "acme-dashboard", "role": "viewer", "tenant": "acme"})))
        .await;
    assert_eq!(status, 201, "{created}");
    let app_token = created["token"].as_str().unwrap().to_string();

    let (host, port) = host_port(&server);
    let sub = Command::new("mosquitto_sub")
        .args(["-h", &host, "-p", &port, "-V", "mqttv5", "-u", "acme-dashboard", "-P", &app_token])
        .args(["-t", "devices/+/telemetry", "-v", "-C", "1", "-W", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed");
    tokio::time::sleep(Duration::from_millis(700)).await; // let the subscription land
    // The other tenant's message is not delivered; acme's is, with the original payload.
    let (ok, out) = mosquitto_pub(
        &server,
        &[
            "-q",
            "1",
            "-i",
            "truck-g",
            "-u",
            "truck-g",
            "-P",
            &globex_token,
            "-t",
            "devices/truck-g/telemetry",
            "-m",
            r#"{"speed": 1}"#,
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = mosquitto_pub(
        &server,
        &[
            "-q",
            "1",
            "-i",
            "truck-a",
            "-u",
            "truck-a",
            "-P",
            &acme_token,
            "-t",
            "devices/truck-a/telemetry",
            "-m",
            r#"{"speed": 2}"#,
        ],
    );
    assert!(ok, "{out}");
    let out = sub.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"devices/truck-a/telemetry {"speed": 2}"#,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A viewer may not publish (a command, say).
    let (_, out) = mosquitto_pub(
        &server,
        &["-V", "mqttv5", "-q", "1", "-u", "acme-dashboard", "-P", &app_token, "-t", "devices/truck-a/commands/stop", "-m", "{}"],
    );
    assert!(out.contains("Not authorized") || out.contains("not authorized"), "{out}");
}

#[tokio::test]
async fn rotating_a_token_or_quarantining_disconnects_the_live_session() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("valve-1", json!({})).await;
    let (host, port) = host_port(&server);
    let online = "SELECT online FROM devices WHERE device = 'valve-1'";
    // MQTT 5 (mosquitto_sub): the server says why, DISCONNECT 0x98 administrative action.
    // stdbuf: mosquitto_sub's stdout is block-buffered into a pipe; we read it line by line.
    let mut sub = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-d",
            "-V",
            "mqttv5",
            "-h",
            &host,
            "-p",
            &port,
            "-i",
            "valve-1",
            "-u",
            "valve-1",
            "-P",
            &token,
        ])
        .args(["-t", "devices/valve-1/commands/#"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l.contains("received SUBACK")));
    assert_eq!(server.query(online).await, vec![vec![json!(true)]]);
    let (status, body) = server.admin(Method::POST, "/api/v1/devices/valve-1/token", None).await;
    assert_eq!(status, 200);
    let token = body["token"].as_str().unwrap().to_string();
    let disconnected =
        tokio::task::spawn_blocking(move || lines.map_while(Result::ok).find(|l| l.contains("DISCONNECT"))).await.unwrap();
    assert_eq!(disconnected.as_deref(), Some("Received DISCONNECT (152)"));
    let _ = sub.kill();
    let _ = sub.wait();
    wait_until_offline(&server, online).await;

    // MQTT 3.1.1 (paho) has no server DISCONNECT: the connection is closed (paho: 128, lost).
    let mut watcher = Command::new("python3")
        .args([PAHO, "watch", &host, &port, "valve-1", "valve-1", &token, "311"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "connected 0");
    let (status, _) = server.admin(Method::PATCH, "/api/v1/devices/valve-1", Some(json!({"status": "quarantined"}))).await;
    assert_eq!(status, 200);
    let line = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap()).await.unwrap();
    assert_eq!(line, "disconnected 128");
    let _ = watcher.wait();
    wait_until_offline(&server, online).await;
}

async fn wait_until_offline(server: &TestServer, online: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.query(online).await != vec![vec![json!(false)]] {
        assert!(std::time::Instant::now() < deadline, "still online after the disconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn qos1_acknowledged_telemetry_survives_kill_9() {
    let mut server = TestServer::start(BIN).await;
    let token = server.register_device("probe-1", json!({})).await;
    for i in 0..20 {
        let payload = format!(r#"{{"seq": {i}}}"#);
        let (ok, out) = mosquitto_pub(
            &server,
            &["-q", "1", "-i", "probe-1", "-u", "probe-1", "-P", &token, "-t", "devices/probe-1/telemetry", "-m", &payload],
        );
        assert!(ok, "{out}");
    }
    server.kill9();
    server.restart();
    assert_eq!(server.query("SELECT count(DISTINCT seq) FROM telemetry").await, vec![vec![json!(20)]]);
}

/// A device that did not get its PUBACK sends the reading again (QoS 1 replay): with its own
/// `ts` it is the same point, stored once, the later copy winning; across a restart too.
#[tokio::test]
async fn a_replayed_qos1_reading_with_its_timestamp_is_stored_once() {
    let mut server = TestServer::start(BIN).await;
    let token = server.register_device("probe-2", json!({})).await;
    let publish = |server: &TestServer, payload: &str| {
        let args = ["-q", "1", "-i", "probe-2", "-u", "probe-2", "-P", &token, "-t", "devices/probe-2/telemetry", "-m", payload];
        let (ok, out) = mosquitto_pub(server, &args);
        assert!(ok, "{out}");
    };
    let reading = r#"{"ts": "2026-12-07T10:00:00Z", "temperature": 4.5}"#;
    publish(&server, reading);
    publish(&server, reading);
    publish(&server, r#"{"ts": "2026-12-07T10:01:00Z", "temperature": 4.7}"#);
    let rows = "SELECT time, temperature FROM telemetry ORDER BY time";
    let expected = vec![vec![json!("2026-12-07T10:00:00Z"), json!(4.5)], vec![json!("2026-12-07T10:01:00Z"), json!(4.7)]];
    assert_eq!(server.query(rows).await, expected);
    // After a restart (the first copy now in Parquet) the replay still overwrites.
    server.restart();
    publish(&server, r#"{"ts": "2026-12-07T10:00:00Z", "temperature": 4.6}"#);
    let mut expected = expected;
    expected[0][1] = json!(4.6);
    assert_eq!(server.query(rows).await, expected);
}

#[tokio::test]
async fn paho_over_websocket_publishes_through_the_http_listener() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("tracker-1", json!({})).await;
    let http = server.base.trim_start_matches("http://").to_string();
    let (host, port) = http.rsplit_once(':').unwrap();
    for (version, speed) in [("5", 1), ("311", 2)] {
        let out = Command::new("python3")
            .args([PAHO, "publish", host, port, "tracker-1", "tracker-1", &token, version, "devices/tracker-1/telemetry"])
            .arg(format!(r#"{{"speed": {speed}}}"#))
            .env("MQTT_TRANSPORT", "websockets")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "puback 0", "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(server.query("SELECT speed FROM telemetry ORDER BY time").await, vec![vec![json!(1.0)], vec![json!(2.0)]]);
    // A plain GET (no WebSocket upgrade) is a 4xx, not a crash.
    let status = server.http.get(server.url("/mqtt")).send().await.unwrap().status().as_u16();
    assert!((400..500).contains(&status), "{status}");
}

#[tokio::test]
async fn mqtts_with_a_configured_certificate_carries_durable_telemetry() {
    let certs = tempfile::tempdir().unwrap();
    corral_testkit::make_certificates(certs.path());
    let path = |f: &str| certs.path().join(f).display().to_string();
    let (cert, key) = (path("server.pem"), path("server.key"));
    let server = TestServer::start_with(
        BIN,
        &["--mqtts", "127.0.0.1:0", "--https", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key],
    )
    .await;
    let token = server.register_device("gauge-1", json!({})).await;
    let (host, port) = server.mqtts.rsplit_once(':').expect("MQTTS address logged");
    let publish = |cafile: &str, value: u32| {
        Command::new("mosquitto_pub")
            .args(["-h", host, "-p", port, "--cafile", cafile, "-V", "mqttv5", "-q", "1"])
            .args(["-i", "gauge-1", "-u", "gauge-1", "-P", &token, "-t", "devices/gauge-1/telemetry"])
            .args(["-m", &format!(r#"{{"bar": {value}}}"#)])
            .output()
            .unwrap()
    };
    let out = publish(&path("ca.pem"), 7);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A client that does not trust the server's CA gives up during the handshake; the server
    // goes on serving.
    let out = publish(&path("other.pem"), 8);
    assert!(!out.status.success());
    let out = publish(&path("ca.pem"), 9);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.query("SELECT bar FROM telemetry ORDER BY time").await, vec![vec![json!(7.0)], vec![json!(9.0)]]);
}

#[tokio::test]
async fn mqtts_without_a_certificate_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
            "--coap",
            "127.0.0.1:0",
            "--coaps",
            "127.0.0.1:0",
            "--mqtts",
            "127.0.0.1:0",
        ])
        .env("CORRAL_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-cert and --tls-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn reported_attributes_merge_into_the_registry() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("hvac-1", json!({"attributes": {"model": "X200", "floor": 3}})).await;
    let (ok, out) = mosquitto_pub(
        &server,
        &[
            "-q",
            "1",
            "-i",
            "hvac-1",
            "-u",
            "hvac-1",
            "-P",
            &token,
            "-t",
            "devices/hvac-1/attributes",
            "-m",
            r#"{"firmware": "2.1.0", "floor": 4}"#,
        ],
    );
    assert!(ok, "{out}");
    let (_, device) = server.admin(Method::GET, "/api/v1/devices/hvac-1", None).await;
    assert_eq!(device["attributes"], json!({"model": "X200", "floor": 4, "firmware": "2.1.0"}), "{device}");
    // Not an object: MQTT 5 0x99, and the attributes stay as they were.
    let out = paho(&server, &["publish", "hvac-1", "hvac-1", &token, "5", "devices/hvac-1/attributes", "[1, 2]"]);
    assert_eq!(out, "puback 153");
    let (_, device) = server.admin(Method::GET, "/api/v1/devices/hvac-1", None).await;
    assert_eq!(device["attributes"]["firmware"], json!("2.1.0"));
}
