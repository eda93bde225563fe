//! The CoAP door against real clients: libcoap's `coap-client` (Debian libcoap3-bin), Python
//! `aiocoap` (clients/coap_clients.py, and clients/coap_twin.py for device twins), and hand-made
//! datagrams from a raw UDP socket.

use corral_testkit::{Script, TestServer, coap_datagram as datagram};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const AIOCOAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/coap_clients.py");
const COAP_CLIENT: &str = "coap-client-notls";

fn uri(server: &TestServer, path: &str, token: &str) -> String {
    format!("coap://{}/{path}?t={token}", server.coap)
}

/// `coap-client` with a 10 s wait; returns (stdout, stderr). It prints error codes on stderr.
fn coap_client(args: &[&str]) -> (String, String) {
    let out = Command::new(COAP_CLIENT).args(["-B", "10"]).args(args).output().expect("coap-client (apt install libcoap3-bin)");
    (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// aiocoap `post`: "<code> <diagnostic>".
fn aiocoap_post(uri: &str, format: &str, document: &str, mode: &str) -> String {
    let out = Command::new("python3").args([AIOCOAP, "post", uri, format, document, mode]).output().expect("python3");
    assert!(out.status.success(), "aiocoap: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn every_content_format_from_coap_client_and_aiocoap_is_durable_and_queryable() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("meter-1", json!({"site": "plant-a"})).await;
    let telemetry = uri(&server, "devices/meter-1/telemetry", &token);
    // libcoap: JSON and SenML JSON, Confirmable and Non-confirmable.
    let (_, err) = coap_client(&["-m", "post", "-t", "50", "-e", r#"{"ts": 1795255200000, "power": 1.5}"#, &telemetry]);
    assert!(!err.contains("4.") && !err.contains("5."), "{err}");
    let (_, err) =
        coap_client(&["-N", "-m", "post", "-t", "110", "-e", r#"[{"bt": 1795255201, "n": "power", "v": 2.5}]"#, &telemetry]);
    assert!(!err.contains("4.") && !err.contains("5."), "{err}");
    // aiocoap: CBOR and SenML CBOR (integer labels), and a named table.
    assert_eq!(aiocoap_post(&telemetry, "cbor", r#"{"ts": 1795255202000, "power": 3.5}"#, "con"), "2.04");
    assert_eq!(aiocoap_post(&telemetry, "senml-cbor", r#"[{"bt": 1795255203, "n": "power", "v": 4.5}]"#, "non"), "2.04");
    let env = uri(&server, "devices/meter-1/telemetry/env", &token);
    assert_eq!(aiocoap_post(&env, "json", r#"{"humidity": 61}"#, "con"), "2.04");

    let rows = server.query("SELECT t.power, d.site FROM telemetry t JOIN devices d USING (device) ORDER BY time").await;
    let expected: Vec<_> = [1.5, 2.5, 3.5, 4.5].iter().map(|p| vec![json!(p), json!("plant-a")]).collect();
    assert_eq!(rows, expected);
    assert_eq!(server.query("SELECT device, humidity FROM env").await, vec![vec![json!("meter-1"), json!(61.0)]]);
    // The CoAP door counts as hearing from the device.
    let (_, device) = server.admin(Method::GET, "/api/v1/devices/meter-1", None).await;
    assert!(device["last_seen"].is_string(), "{device}");
}

#[tokio::test]
async fn refusals_are_coap_codes_with_a_reason_and_store_nothing() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("meter-1", json!({})).await;
    let other = server.register_device("meter-2", json!({})).await;
    let gateway = server.register_device("gw-1", json!({})).await;
    server.register_device("child-1", json!({"gateway": "gw-1"})).await;
    let telemetry = uri(&server, "devices/meter-1/telemetry", &token);

    assert_eq!(
        aiocoap_post(&uri(&server, "devices/meter-1/telemetry", "cdt_wrong"), "json", r#"{"a": 1}"#, "con"),
        "4.01 invalid device token"
    );
    assert_eq!(
        aiocoap_post(&format!("coap://{}/devices/meter-1/telemetry", server.coap), "json", r#"{"a": 1}"#, "con"),
        "4.01 add the device token as ?t=<token>, or use coaps with the device's pre-shared key"
    );
    assert_eq!(
        aiocoap_post(&uri(&server, "devices/meter-1/telemetry", &other), "json", r#"{"a": 1}"#, "con"),
        "4.03 the token of meter-2 may not speak for meter-1"
    );
    assert_eq!(
        aiocoap_post(&telemetry, "json", r#"{"a": "#, "con"),
        "4.00 invalid JSON at line 1 column 6: EOF while parsing a value"
    );
    assert_eq!(
        aiocoap_post(&telemetry, "senml-cbor", r#"[{"n": "a"}]"#, "con"),
        r#"4.00 record 1: field "a": no value (one of "v", "vs", "vb", "vd" or a sum "s" is required)"#
    );
    let (_, err) = coap_client(&["-m", "post", "-t", "0", "-e", "a=1", &telemetry]);
    assert!(err.contains("4.15 content format 0 is not telemetry"), "{err}");
    let (_, err) = coap_client(&["-m", "put", "-t", "50", "-e", "{}", &telemetry]);
    assert!(err.contains("4.05 only POST here"), "{err}");
    let (_, err) = coap_client(&["-m", "get", &uri(&server, "nowhere", &token)]);
    assert!(err.contains("4.04"), "{err}");
    assert_eq!(server.count("telemetry").await, 0, "a refused request stores nothing");

    // A gateway speaks for its children, with its own token.
    assert_eq!(aiocoap_post(&uri(&server, "devices/child-1/telemetry", &gateway), "json", r#"{"a": 1}"#, "con"), "2.04");
    assert_eq!(server.query("SELECT device FROM telemetry").await, vec![vec![json!("child-1")]]);
    // A quarantined device is refused.
    server.admin(Method::PATCH, "/api/v1/devices/meter-1", Some(json!({"status": "quarantined"}))).await;
    assert_eq!(aiocoap_post(&telemetry, "json", r#"{"a": 1}"#, "con"), "4.03 device meter-1 is quarantined");
}

#[tokio::test]
async fn observers_receive_commands_in_order_and_their_responses_reach_mqtt() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("valve-1", json!({})).await;
    let commands = uri(&server, "devices/valve-1/commands", &token);
    let (host, port) = server.mqtt.split_once(':').unwrap();
    let publish = |id: &str, payload: &str| {
        let out = Command::new("mosquitto_pub")
            .args(["-h", host, "-p", port, "-q", "1", "-i", "ops", "-u", "token", "-P", corral_testkit::ADMIN_TOKEN])
            .args(["-t", &format!("devices/valve-1/commands/{id}"), "-m", payload])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    // Commands for a device that never spoke CoAP are not kept twice (MQTT has them).
    publish("before", "1");
    // A poll makes it a CoAP device: from now on commands wait for it.
    let (body, _) = coap_client(&["-m", "get", &commands]);
    assert_eq!(body.trim(), "", "nothing waits yet");
    publish("open", r#"{"position": 80}"#);
    let (body, _) = coap_client(&["-m", "get", &commands]);
    assert_eq!(body.trim(), r#"{"id":"open","payload":{"position":80}}"#, "a poll sees the oldest waiting command");

    let mut observer = Command::new("python3").args([AIOCOAP, "observe", &commands, "3"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(observer.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "registered 2.05");
    let big = "x".repeat(3000); // more than one block: the notification goes block-wise
    publish("close", "shut");
    publish("big", &big);
    let got: Vec<String> =
        tokio::task::spawn_blocking(move || lines.by_ref().take(3).map(Result::unwrap).collect()).await.unwrap();
    assert_eq!(got[0], r#"{"id":"open","payload":{"position":80}}"#, "the command waiting before the registration comes first");
    assert_eq!(got[1], r#"{"id":"close","payload":"shut"}"#);
    assert_eq!(got[2], format!(r#"{{"id":"big","payload":"{big}"}}"#));
    assert!(observer.wait().unwrap().success());
    let (body, _) = coap_client(&["-m", "get", &commands]);
    assert_eq!(body.trim(), "", "acknowledged notifications took the commands out of the queue");

    // The device answers a command: the answer is published where applications read it.
    let sub = Command::new("mosquitto_sub")
        .args(["-h", host, "-p", port, "-i", "ops-sub", "-u", "token", "-P", corral_testkit::ADMIN_TOKEN])
        .args(["-t", "devices/valve-1/commands/+/response", "-C", "1", "-v", "-W", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // the subscription is in place
    let answer = uri(&server, "devices/valve-1/commands/close/response", &token);
    assert_eq!(aiocoap_post(&answer, "json", r#"{"done": true}"#, "con"), "2.04");
    let out = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"devices/valve-1/commands/close/response {"done": true}"#);
}

#[tokio::test]
async fn block_wise_transfer_both_ways_and_the_body_limit() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("cam-1", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    // 100 readings, about 6 KB: coap-client uploads it in 64-byte Block1 blocks.
    let readings: Vec<_> =
        (0..100).map(|i| json!({"ts": 1_795_255_200_000i64 + i, "frame": i, "label": "x".repeat(20)})).collect();
    let file = dir.path().join("readings.json");
    std::fs::write(&file, serde_json::to_vec(&readings).unwrap()).unwrap();
    let telemetry = uri(&server, "devices/cam-1/telemetry/frames", &token);
    let (_, err) = coap_client(&["-b", "64", "-m", "post", "-t", "50", "-f", file.to_str().unwrap(), &telemetry]);
    assert!(!err.contains("4.") && !err.contains("5."), "{err}");
    assert_eq!(server.count("frames").await, 100);
    assert_eq!(server.query("SELECT sum(frame) FROM frames").await, vec![vec![json!(4950.0)]]);
    // aiocoap goes block-wise by itself for a body larger than one block.
    let more: Vec<_> = (100..200).map(|i| json!({"ts": 1_795_255_200_000i64 + i, "frame": i, "label": "y".repeat(20)})).collect();
    assert_eq!(aiocoap_post(&telemetry, "json", &serde_json::to_string(&more).unwrap(), "con"), "2.04");
    assert_eq!(server.count("frames").await, 200);

    // Block2: a pending command bigger than a block, fetched by a plain GET.
    coap_client(&["-m", "get", &uri(&server, "devices/cam-1/commands", &token)]);
    let (host, port) = server.mqtt.split_once(':').unwrap();
    let big = "y".repeat(2500);
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-q",
            "1",
            "-u",
            "token",
            "-P",
            corral_testkit::ADMIN_TOKEN,
            "-t",
            "devices/cam-1/commands/c1",
            "-m",
            &big,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (body, err) = coap_client(&["-m", "get", &uri(&server, "devices/cam-1/commands", &token)]);
    assert_eq!(body.trim(), format!(r#"{{"id":"c1","payload":"{big}"}}"#), "{err}");

    // Over the body limit (1 MiB by default, announced by Size1 or reached block by block): 4.13.
    let huge = dir.path().join("huge.json");
    std::fs::write(&huge, format!(r#"{{"blob": "{}"}}"#, "z".repeat(1_100_000))).unwrap();
    let (_, err) = coap_client(&["-m", "post", "-t", "50", "-f", huge.to_str().unwrap(), &telemetry]);
    assert!(err.contains("4.13"), "{err}");
    assert_eq!(server.count("frames").await, 200);
}

fn telemetry_post(kind: u8, message_id: u16, token: &str, payload: &[u8]) -> Vec<u8> {
    let query = format!("t={token}");
    let options: [(u16, &[u8]); 4] = [(11, b"devices"), (11, b"pump-1"), (11, b"telemetry"), (15, query.as_bytes())];
    datagram(kind, 2, message_id, &[0xa1, 0xb2], &options, payload)
}

fn udp(server: &TestServer) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(&server.coap).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    socket
}

/// One datagram (blocking: the server is another process, so the test runtime may wait).
fn receive(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[tokio::test]
async fn duplicates_are_answered_from_memory_and_malformed_datagrams_never_hurt() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("pump-1", json!({})).await;
    let socket = udp(&server);

    // A Confirmable POST: piggybacked 2.04 (ACK, same message id and token).
    let request = telemetry_post(0, 0x1234, &token, br#"{"rpm": 1200}"#);
    socket.send(&request).unwrap();
    let ack = receive(&socket).expect("an answer");
    assert_eq!(ack, vec![0x62, 0x44, 0x12, 0x34, 0xa1, 0xb2], "ACK 2.04 with the token");
    // The same message again (our ACK was 'lost'): the same answer, and nothing stored twice.
    socket.send(&request).unwrap();
    assert_eq!(receive(&socket), Some(ack));
    // Non-confirmable duplicates are dropped too.
    let non = telemetry_post(1, 0x2000, &token, br#"{"rpm": 1300}"#);
    socket.send(&non).unwrap();
    let answer = receive(&socket).expect("a NON answer");
    assert_eq!(&answer[..2], &[0x52, 0x44], "NON 2.04 with the token");
    socket.send(&non).unwrap();
    assert_eq!(server.query("SELECT rpm FROM telemetry ORDER BY time").await, vec![vec![json!(1200.0)], vec![json!(1300.0)]]);

    // Malformed: a Confirmable one gets Reset with its message id; others are dropped silently.
    let malformed: [(&[u8], Option<Vec<u8>>); 6] = [
        (&[0x40, 0x01, 0x00, 0x07, 0xff], Some(vec![0x70, 0x00, 0x00, 0x07])), // marker, no payload
        (&[0x49, 0x01, 0x00, 0x08], Some(vec![0x70, 0x00, 0x00, 0x08])),       // token length 9
        (&[0x40, 0x01, 0x00, 0x09, 0xbf], Some(vec![0x70, 0x00, 0x00, 0x09])), // option length 15
        (&[0x40, 0x00, 0x00, 0x0a], Some(vec![0x70, 0x00, 0x00, 0x0a])),       // a CoAP ping
        (&[0x50, 0x01, 0x00, 0x0b, 0xff], None),                               // NON: dropped
        (&[0x01, 0x02], None),                                                 // not CoAP at all
    ];
    for (bytes, reset) in &malformed {
        socket.send(bytes).unwrap();
        if let Some(reset) = reset {
            assert_eq!(receive(&socket).as_ref(), Some(reset), "{bytes:?}");
        }
    }
    // An unknown critical option: 4.02 Bad Option.
    let options: [(u16, &[u8]); 2] = [(11, b".well-known"), (2049, b"x")];
    socket.send(&datagram(0, 1, 0x0d, &[1], &options, b"")).unwrap();
    let bad_option = receive(&socket).expect("an answer");
    assert_eq!(&bad_option[..2], &[0x61, 0x82], "ACK 4.02");

    // After all that, the server still serves everyone.
    socket.send(&telemetry_post(0, 0x3000, &token, br#"{"rpm": 1400}"#)).unwrap();
    assert_eq!(receive(&socket).map(|a| a[1]), Some(0x44));
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("corral_coap_duplicates_total 2"), "{metrics}");
    assert!(metrics.contains("corral_coap_malformed_total 5"), "{metrics}");
}

#[tokio::test]
async fn a_slow_write_gets_an_empty_ack_then_a_separate_response() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.toml");
    // Waiting 0 ms for the write makes every Confirmable answer a separate one.
    std::fs::write(&config, "[coap]\npiggyback_wait_ms = 0\n").unwrap();
    let server = TestServer::start_with(BIN, &["--config", config.to_str().unwrap()]).await;
    let token = server.register_device("pump-1", json!({})).await;
    let socket = udp(&server);
    socket.send(&telemetry_post(0, 0x4000, &token, br#"{"rpm": 900}"#)).unwrap();
    let empty_ack = receive(&socket).expect("an empty ACK");
    assert_eq!(empty_ack, vec![0x60, 0x00, 0x40, 0x00]);
    let separate = receive(&socket).expect("the separate response");
    assert_eq!(
        (separate[0], separate[1], &separate[4..6]),
        (0x42, 0x44, &[0xa1u8, 0xb2][..]),
        "CON 2.04 with the request's token"
    );
    socket.send(&[0x60, 0x00, separate[2], separate[3]]).unwrap(); // acknowledge it
    assert_eq!(server.query("SELECT rpm FROM telemetry").await, vec![vec![json!(900.0)]]);
    // libcoap copes with the separate response as well.
    let (_, err) =
        coap_client(&["-m", "post", "-t", "50", "-e", r#"{"rpm": 950}"#, &uri(&server, "devices/pump-1/telemetry", &token)]);
    assert!(!err.contains("4.") && !err.contains("5."), "{err}");
    assert_eq!(server.count("telemetry").await, 2);
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("corral_coap_separate_responses_total 2"), "{metrics}");
    assert!(metrics.contains("corral_coap_unacknowledged_total 0"), "{metrics}");
}

/// `coap-client` of the given DTLS flavour (`openssl` or `gnutls`) with PSK identity and key;
/// returns stdout and stderr together (libcoap logs its errors on stdout, codes on stderr).
fn coaps_client(flavour: &str, identity: &str, key: &str, args: &[&str]) -> String {
    let out = Command::new(format!("coap-client-{flavour}"))
        .args(["-B", "10", "-u", identity, "-k", key])
        .args(args)
        .output()
        .expect("coap-client (apt install libcoap3-bin)");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn metric(server: &TestServer, line: &str) -> String {
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find(|l| l.starts_with(line)).unwrap_or_default().to_string()
}

#[tokio::test]
async fn coaps_devices_authenticate_with_their_pre_shared_key_and_need_no_token() {
    let server = TestServer::start(BIN).await;
    server.register_device("meter-s", json!({"site": "plant-s"})).await;
    server.register_device("meter-g", json!({})).await;
    server.register_device("other", json!({})).await;
    // A factory key given as text, and a generated one (shown once, as text libcoap takes).
    let (status, set) = server.admin(Method::PUT, "/api/v1/devices/meter-s/psk", Some(json!({"key": "factory-key-0001"}))).await;
    assert_eq!((status, set["key_hex"].as_str()), (200, Some("666163746f72792d6b65792d30303031")), "{set}");
    let (status, generated) = server.admin(Method::PUT, "/api/v1/devices/meter-g/psk", None).await;
    assert_eq!(status, 200, "{generated}");
    let generated_key = generated["key"].as_str().unwrap().to_string();
    assert_eq!(generated_key.len(), 32, "{generated}");
    let (_, shown) = server.admin(Method::GET, "/api/v1/devices/meter-g/psk", None).await;
    assert_eq!(shown, json!({"device": "meter-g", "identity": "meter-g", "has_psk": true}), "the key is never shown again");
    let (status, short) = server.admin(Method::PUT, "/api/v1/devices/other/psk", Some(json!({"key_hex": "00ff"}))).await;
    assert_eq!(status, 400, "{short}");

    let telemetry = |device: &str| format!("coaps://{}/devices/{device}/telemetry", server.coaps);
    // libcoap over OpenSSL and over GnuTLS; Confirmable and Non-confirmable; no token anywhere.
    let err = coaps_client(
        "openssl",
        "meter-s",
        "factory-key-0001",
        &["-m", "post", "-t", "50", "-e", r#"{"power": 1.5}"#, &telemetry("meter-s")],
    );
    assert!(!err.contains("4.") && !err.contains("5.") && !err.contains("ERR"), "{err}");
    let err = coaps_client(
        "gnutls",
        "meter-s",
        "factory-key-0001",
        &["-N", "-m", "post", "-t", "110", "-e", r#"[{"n": "power", "v": 2.5}]"#, &telemetry("meter-s")],
    );
    assert!(!err.contains("4.") && !err.contains("5.") && !err.contains("ERR"), "{err}");
    let err =
        coaps_client("gnutls", "meter-g", &generated_key, &["-m", "post", "-e", r#"{"power": 3.5}"#, &telemetry("meter-g")]);
    assert!(!err.contains("4.") && !err.contains("5.") && !err.contains("ERR"), "{err}");
    let rows = server.query("SELECT device, power FROM telemetry ORDER BY power").await;
    assert_eq!(
        rows,
        vec![vec![json!("meter-s"), json!(1.5)], vec![json!("meter-s"), json!(2.5)], vec![json!("meter-g"), json!(3.5)]]
    );

    // The session speaks for its own device only.
    let err =
        coaps_client("openssl", "meter-s", "factory-key-0001", &["-m", "post", "-e", r#"{"power": 9}"#, &telemetry("other")]);
    assert!(err.contains("4.03"), "{err}");
    // A wrong key or an unknown identity never gets a session, and nothing is stored.
    let err = coaps_client(
        "openssl",
        "meter-s",
        "not-the-right-key",
        &["-B", "4", "-m", "post", "-e", r#"{"power": 9}"#, &telemetry("meter-s")],
    );
    assert!(err.contains("ERR"), "{err}");
    let err = coaps_client("gnutls", "ghost", "factory-key-0001", &["-m", "post", "-e", r#"{"power": 9}"#, &telemetry("ghost")]);
    assert!(err.contains("PSK username is missing or not known"), "{err}");
    assert_eq!(server.count("telemetry").await, 3);
    assert_eq!(
        metric(&server, "corral_coaps_handshake_failures_total{reason=\"unknown_identity\"}").await,
        "corral_coaps_handshake_failures_total{reason=\"unknown_identity\"} 1"
    );
    // Plain CoAP sent to the DTLS port is not read at all.
    let (_, err) =
        coap_client(&["-B", "2", "-m", "post", "-e", "{}", &format!("coap://{}/devices/meter-s/telemetry", server.coaps)]);
    assert!(!err.contains("2.04"), "{err}");

    // Commands reach an observer on its session.
    let observer = Command::new("coap-client-openssl")
        .args(["-B", "10", "-s", "6", "-u", "meter-s", "-k", "factory-key-0001", "-m", "get"])
        .arg(format!("coaps://{}/devices/meter-s/commands", server.coaps))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await; // registered
    let (host, port) = server.mqtt.split_once(':').unwrap();
    let out = Command::new("mosquitto_pub")
        .args(["-h", host, "-p", port, "-q", "1", "-i", "ops", "-u", "token", "-P", corral_testkit::ADMIN_TOKEN])
        .args(["-t", "devices/meter-s/commands/reboot", "-m", r#"{"delay": 5}"#])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = tokio::task::spawn_blocking(move || observer.wait_with_output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"{"id":"reboot","payload":{"delay":5}}"#),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without its key, or once it is no longer active, a device cannot open a session.
    let (status, _) = server.admin(Method::DELETE, "/api/v1/devices/meter-g/psk", None).await;
    assert_eq!(status, 204);
    let err = coaps_client(
        "openssl",
        "meter-g",
        &generated_key,
        &["-B", "4", "-m", "post", "-e", r#"{"power": 9}"#, &telemetry("meter-g")],
    );
    assert!(err.contains("ERR"), "{err}");
    let (status, _) = server.admin(Method::PATCH, "/api/v1/devices/meter-s", Some(json!({"status": "quarantined"}))).await;
    assert_eq!(status, 200);
    let err = coaps_client(
        "openssl",
        "meter-s",
        "factory-key-0001",
        &["-B", "4", "-m", "post", "-e", r#"{"power": 9}"#, &telemetry("meter-s")],
    );
    assert!(err.contains("ERR"), "{err}");
    assert_eq!(server.count("telemetry").await, 3);
    assert_eq!(
        metric(&server, "corral_coaps_handshake_failures_total{reason=\"unknown_identity\"}").await,
        "corral_coaps_handshake_failures_total{reason=\"unknown_identity\"} 2"
    );
    assert_eq!(
        metric(&server, "corral_coaps_handshake_failures_total{reason=\"not_active\"}").await,
        "corral_coaps_handshake_failures_total{reason=\"not_active\"} 1"
    );
    let log = server.log_text();
    assert!(log.contains("coaps handshake failed") && log.contains("device meter-s is quarantined"), "{log}");
    // Every key change is in the audit log, with who did it.
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).filter(|a| a.contains("psk")).collect();
    assert_eq!(actions.len(), 3, "{audit}");
}

/// A DTLS 1.2 ClientHello without a cookie, offering PSK-AES128-GCM-SHA256.
fn client_hello() -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.push(0); // cookie
    body.extend_from_slice(&[0, 2, 0x00, 0xa8]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression: null
    let len = (body.len() as u32).to_be_bytes();
    let mut handshake = vec![1, len[1], len[2], len[3], 0, 0, 0, 0, 0, len[1], len[2], len[3]];
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn a_coaps_client_hello_gets_a_cookie_challenge_and_the_server_keeps_nothing() {
    let server = TestServer::start(BIN).await;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.connect(&server.coaps).unwrap();
    for _ in 0..50 {
        socket.send(&client_hello()).unwrap();
        let mut buf = [0u8; 2048];
        let n = socket.recv(&mut buf).expect("an answer to every ClientHello");
        // A handshake record holding a HelloVerifyRequest (type 3) with a cookie: small, so the
        // port cannot amplify a spoofed flood.
        assert_eq!((buf[0], buf[13]), (22, 3), "{:?}", &buf[..n]);
        assert!(n < 100, "{n} bytes");
    }
    assert_eq!(
        metric(&server, "corral_coaps_sessions ").await,
        "corral_coaps_sessions 0",
        "no state before the client proves its address"
    );
}

/// Commands go through the platform's command service, not the MQTT broker: with MQTT off, a
/// CoAP device still receives what REST and a rule's command action send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mqtt_off_an_observer_still_receives_commands_from_rest_and_rules() {
    let server = TestServer::start_with(BIN, &["--mqtt", "off"]).await;
    assert!(server.mqtt.is_empty(), "MQTT is off");
    let token = server.register_device("valve-9", json!({})).await;
    let (status, body) = server
        .admin(
            Method::POST,
            "/api/v1/rules",
            Some(json!({"name": "valve hot", "condition": "temperature > 8",
                        "actions": [{"type": "command", "name": "cool-down", "payload": {"setpoint": 4}}]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let commands = uri(&server, "devices/valve-9/commands", &token);
    let mut observer = Command::new("python3").args([AIOCOAP, "observe", &commands, "2"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(observer.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "registered 2.05");

    let send = json!({"name": "open", "payload": {"position": 80}});
    let (status, created) = server.admin(Method::POST, "/api/v1/devices/valve-9/commands", Some(send)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let telemetry = uri(&server, "devices/valve-9/telemetry", &token);
    assert_eq!(aiocoap_post(&telemetry, "json", r#"{"temperature": 12}"#, "con"), "2.04");

    let got: Vec<Value> = tokio::task::spawn_blocking(move || {
        lines.by_ref().take(2).map(|line| serde_json::from_str(&line.unwrap()).unwrap()).collect()
    })
    .await
    .unwrap();
    assert_eq!(got[0], json!({"id": id, "name": "open", "payload": {"position": 80}}), "the REST command");
    assert_eq!((got[1]["name"].as_str(), got[1]["payload"].clone()), (Some("cool-down"), json!({"setpoint": 4})), "the rule's");
    assert!(observer.wait().unwrap().success());

    // The acknowledged notification delivered it; the device's answer over CoAP completes it,
    // with MQTT off.
    let answer = uri(&server, &format!("devices/valve-9/commands/{id}/response"), &token);
    assert_eq!(aiocoap_post(&answer, "json", r#"{"status": "succeeded", "payload": {"position": 80}}"#, "con"), "2.04");
    let (_, command) = server.admin(Method::GET, &format!("/api/v1/commands/{id}"), None).await;
    assert_eq!((command["state"].as_str(), command["door"].as_str()), (Some("succeeded"), Some("coap")), "{command}");
    assert!(command["delivered_at_ms"].is_i64(), "{command}");
}

#[tokio::test]
async fn sending_a_command_over_rest_needs_a_writer_and_a_device_the_caller_sees() {
    let server = TestServer::start(BIN).await;
    server.register_device("pump-1", json!({})).await;
    let send = || Some(json!({"name": "reboot"}));
    let (status, body) = server.admin(Method::POST, "/api/v1/devices/nobody/commands", send()).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.admin(Method::POST, "/api/v1/devices/pump-1/commands", Some(json!({"name": "a\nb"}))).await;
    assert_eq!(status, 400, "a name with a control character: {body}");
    let (status, viewer) = server.admin(Method::POST, "/api/v1/tokens", Some(json!({"name": "watcher", "role": "viewer"}))).await;
    assert_eq!(status, 201, "{viewer}");
    let secret = viewer["token"].as_str().unwrap();
    let (status, body) = server.call(Method::POST, "/api/v1/devices/pump-1/commands", secret, send()).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server.admin(Method::POST, "/api/v1/devices/pump-1/commands", send()).await;
    assert_eq!((status, body["state"].as_str()), (201, Some("queued")), "recorded, waiting for the device: {body}");
}

const TWIN_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/coap_twin.py");

/// One aiocoap request on a twin resource: "<code> <payload>".
fn twin_request(method: &str, uri: &str, body: Option<&str>) -> String {
    let out = Command::new("python3").args([TWIN_CLIENT, "request", method, uri]).args(body).output().expect("python3");
    assert!(out.status.success(), "aiocoap: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An aiocoap device observing its desired document: "registered <code> <observe>", then a
/// "desired <version> <document>" line for the answer and each notification.
fn observe_desired(server: &TestServer, device: &str, token: &str) -> Script {
    let mut command = Command::new("python3");
    command.args([TWIN_CLIENT, "observe", &uri(server, &format!("devices/{device}/twin/desired"), token)]);
    Script::spawn(command, &["ended", "timeout"])
}

#[tokio::test]
async fn coap_devices_observe_their_desired_document_and_receive_every_change_whole() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("thermo-1", json!({})).await;
    assert_eq!(server.patch_desired("thermo-1", json!({"interval_s": 30})).await, 1);

    let mut device = observe_desired(&server, "thermo-1", &token);
    assert_eq!(device.wait_for("registered"), "registered 2.05 1", "the Observe number is the version");
    assert_eq!(device.wait_for("desired"), r#"desired 1 {"interval_s":30}"#, "the current document in the answer");
    server.patch_desired("thermo-1", json!({"fw": "2.1"})).await;
    assert_eq!(device.wait_for("desired"), r#"desired 2 {"fw":"2.1","interval_s":30}"#, "each change, whole");
    server.patch_desired("thermo-1", json!({"interval_s": null})).await;
    assert_eq!(device.wait_for("desired"), r#"desired 3 {"fw":"2.1"}"#);
    // Larger than a block: the notification goes block-wise.
    let banner = "x".repeat(3000);
    server.patch_desired("thermo-1", json!({"banner": banner})).await;
    assert_eq!(device.wait_for("desired"), format!(r#"desired 4 {{"banner":"{banner}","fw":"2.1"}}"#));
    assert!(device.finish().is_empty(), "nothing else arrived");
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("corral_coap_desired_delivered_total 3"), "{metrics}");

    // A plain GET (libcoap here) reads the document without observing; the block-wise one too.
    let (body, err) = coap_client(&["-m", "get", &uri(&server, "devices/thermo-1/twin/desired", &token)]);
    let read: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body} {err}"));
    assert_eq!(read, json!({"version": 4, "desired": {"banner": banner, "fw": "2.1"}}));
    // Discovery lists the twin's resources.
    let (links, _) = coap_client(&["-m", "get", &format!("coap://{}/.well-known/core", server.coap)]);
    for resource in ["twin>", "twin/desired>;rt=\"corral.twin.desired\";obs", "twin/reported>", "twin/get>"] {
        assert!(links.contains(&format!("</devices/{{id}}/{resource}")), "{resource}: {links}");
    }
}

#[tokio::test]
async fn reported_patches_over_coap_merge_and_delete_keys_and_refusals_store_nothing() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("hvac-1", json!({})).await;
    let other = server.register_device("hvac-2", json!({})).await;
    server.patch_desired("hvac-1", json!({"fw": "2.1", "mode": "eco"})).await;
    let reported = uri(&server, "devices/hvac-1/twin/reported", &token);

    // PATCH and POST from aiocoap, iPATCH from libcoap: each a merge patch, 2.04 once durable.
    assert_eq!(twin_request("PATCH", &reported, Some(r#"{"fw": "2.0", "mode": "eco", "battery": 80}"#)), "2.04");
    assert_eq!(twin_request("POST", &reported, Some(r#"{"battery": null}"#)), "2.04");
    let (_, err) = coap_client(&["-m", "ipatch", "-t", "50", "-e", r#"{"rssi": -70}"#, &reported]);
    assert!(!err.contains("4.") && !err.contains("5."), "{err}");
    let state = server.twin("hvac-1").await;
    assert_eq!(state["reported"]["document"], json!({"fw": "2.0", "mode": "eco", "rssi": -70}));
    assert_eq!(state["reported"]["version"], 3);
    assert_eq!(state["delta"], json!({"fw": "2.1"}));

    // Bad or oversized patches: 4.00 and 4.13, nothing stored.
    assert!(twin_request("PATCH", &reported, Some("{not json")).starts_with("4.00 "), "bad JSON");
    assert!(twin_request("PATCH", &reported, Some("[1, 2]")).starts_with("4.00 "), "not an object");
    let over = format!(r#"{{"blob": "{}"}}"#, "x".repeat(40 * 1024));
    assert!(twin_request("PATCH", &reported, Some(&over)).starts_with("4.13 "), "over the 32 KiB document limit");
    let (_, err) = coap_client(&["-m", "patch", "-t", "60", "-e", "x", &reported]);
    assert!(err.contains("4.15"), "{err}");
    assert_eq!(twin_request("PUT", &reported, Some("{}")), "4.05 only PATCH, iPATCH or POST here");
    assert_eq!(server.twin("hvac-1").await["reported"]["version"], 3, "nothing stored");

    // Another device's twin: 4.03, whatever the resource; nothing stored there either.
    let theirs = |resource: &str| uri(&server, &format!("devices/hvac-2/twin/{resource}"), &token);
    let forbidden = "4.03 the token of hvac-1 may not speak for hvac-2";
    assert_eq!(twin_request("PATCH", &theirs("reported"), Some(r#"{"fw": "0"}"#)), forbidden);
    assert_eq!(twin_request("GET", &theirs("desired"), None), forbidden);
    assert_eq!(twin_request("POST", &theirs("get"), Some("{}")), forbidden);
    assert_eq!(twin_request("GET", &uri(&server, "devices/hvac-1/twin/desired", "cdt_wrong"), None), "4.01 invalid device token");
    assert_eq!(server.twin("hvac-2").await["reported"]["version"], 0);
    // Its own token works there.
    assert_eq!(twin_request("PATCH", &uri(&server, "devices/hvac-2/twin/reported", &other), Some(r#"{"fw": "1.0"}"#)), "2.04");
}

#[tokio::test]
async fn twin_get_over_coap_answers_the_whole_twin_or_the_changes_since_a_version() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("pump-1", json!({})).await;
    for patch in [json!({"rpm": 1000}), json!({"rpm": 1200}), json!({"mode": "auto"})] {
        server.patch_desired("pump-1", patch).await;
    }
    let answer = |out: String| -> Value {
        let (code, body) = out.split_once(' ').unwrap_or((out.as_str(), ""));
        assert_eq!(code, "2.05", "{out}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"))
    };

    let whole = answer(twin_request("GET", &uri(&server, "devices/pump-1/twin", &token), None));
    assert_eq!(
        (whole["desired"]["version"].clone(), whole["desired"]["document"].clone()),
        (json!(3), json!({"rpm": 1200, "mode": "auto"}))
    );
    // FETCH on the twin, or POST on twin/get, with {"since": N}: the patches that lead past N.
    let since = Some(r#"{"since": 1}"#);
    for (method, resource) in
        [("FETCH", "devices/pump-1/twin"), ("POST", "devices/pump-1/twin/get"), ("FETCH", "devices/pump-1/twin/get")]
    {
        let changes = answer(twin_request(method, &uri(&server, resource, &token), since));
        assert_eq!((changes["kind"].as_str(), changes["version"].as_u64()), (Some("patches"), Some(3)), "{method} {resource}");
        let patches: Vec<Value> = changes["patches"].as_array().unwrap().iter().map(|p| p["patch"].clone()).collect();
        assert_eq!(patches, [json!({"rpm": 1200}), json!({"mode": "auto"})]);
    }
    let whole_again = answer(twin_request("POST", &uri(&server, "devices/pump-1/twin/get", &token), Some("{}")));
    assert_eq!(whole_again["desired"]["version"], 3);
    let (body, _) =
        coap_client(&["-m", "fetch", "-t", "50", "-e", r#"{"since": 2}"#, &uri(&server, "devices/pump-1/twin", &token)]);
    assert!(body.contains(r#""patches""#) && body.contains(r#""mode":"auto""#), "libcoap FETCH: {body}");
    let bad = twin_request("POST", &uri(&server, "devices/pump-1/twin/get", &token), Some(r#"{"since": "one"}"#));
    assert!(bad.starts_with("4.00 "), "{bad}");
    assert_eq!(twin_request("POST", &uri(&server, "devices/pump-1/twin", &token), Some("{}")), "4.05 only GET or FETCH here");
}

#[tokio::test]
async fn a_desired_change_made_while_a_coap_device_slept_is_in_its_next_registration_even_after_kill_9() {
    let mut server = TestServer::start(BIN).await;
    let token = server.register_device("reefer-1", json!({})).await;
    server.patch_desired("reefer-1", json!({"setpoint_c": -18})).await;
    let mut device = observe_desired(&server, "reefer-1", &token);
    assert_eq!(device.wait_for("desired"), r#"desired 1 {"setpoint_c":-18}"#);
    device.finish();

    // Changed while the device sleeps: its next registration's answer carries the change.
    server.patch_desired("reefer-1", json!({"setpoint_c": -20})).await;
    let mut device = observe_desired(&server, "reefer-1", &token);
    assert_eq!(device.wait_for("registered"), "registered 2.05 2");
    assert_eq!(device.wait_for("desired"), r#"desired 2 {"setpoint_c":-20}"#);
    device.finish();

    // Changed, then the server dies without a goodbye right after answering the change.
    server.patch_desired("reefer-1", json!({"defrost": "auto"})).await;
    server.kill9();
    server.restart();
    let mut device = observe_desired(&server, "reefer-1", &token);
    assert_eq!(device.wait_for("desired"), r#"desired 3 {"defrost":"auto","setpoint_c":-20}"#);
    // And the restarted server pushes the next change to the new observation.
    server.patch_desired("reefer-1", json!({"setpoint_c": -22})).await;
    assert_eq!(device.wait_for("desired"), r#"desired 4 {"defrost":"auto","setpoint_c":-22}"#);
    assert!(device.finish().is_empty());
}

/// RFC 7641 §3.6: a device that answers a notification with Reset no longer observes.
#[tokio::test]
async fn a_reset_notification_ends_the_desired_observation() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("lamp-1", json!({})).await;
    server.patch_desired("lamp-1", json!({"on": false})).await;
    let socket = udp(&server);
    let query = format!("t={token}");
    let options: [(u16, &[u8]); 6] =
        [(6, b""), (11, b"devices"), (11, b"lamp-1"), (11, b"twin"), (11, b"desired"), (15, query.as_bytes())];
    socket.send(&datagram(0, 1, 0x5000, &[0xd1], &options, b"")).unwrap();
    let answer = corral_coap::Message::parse(&receive(&socket).expect("the answer")).unwrap();
    let said = String::from_utf8_lossy(&answer.payload).to_string();
    assert_eq!((answer.code, answer.uint(6)), (corral_coap::Code::CONTENT, Ok(Some(1))), "registered, Observe = version: {said}");
    let document: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(document, json!({"version": 1, "desired": {"on": false}}));
    assert_eq!(metric(&server, "corral_coap_desired_observers ").await, "corral_coap_desired_observers 1");

    server.patch_desired("lamp-1", json!({"on": true})).await;
    let notification = corral_coap::Message::parse(&receive(&socket).expect("a notification")).unwrap();
    assert_eq!(
        (notification.kind, notification.token.as_slice(), notification.uint(6)),
        (corral_coap::Kind::Confirmable, &[0xd1u8][..], Ok(Some(2)))
    );
    let document: Value = serde_json::from_slice(&notification.payload).unwrap();
    assert_eq!(document, json!({"version": 2, "desired": {"on": true}}));
    let id = notification.message_id.to_be_bytes();
    socket.send(&[0x70, 0x00, id[0], id[1]]).unwrap(); // Reset
    for _ in 0..50 {
        if metric(&server, "corral_coap_desired_observers ").await == "corral_coap_desired_observers 0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&server, "corral_coap_desired_observers ").await, "corral_coap_desired_observers 0");
    server.patch_desired("lamp-1", json!({"on": false})).await;
    assert_eq!(receive(&socket), None, "no notification after the Reset");
}
