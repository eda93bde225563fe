//! MQTT (paho-mqtt, clients/mqtt_attacks.py): session takeover, forged alarms, 0x95.

use super::*;
use corral_testkit::ADMIN_TOKEN;
use corral_testkit::Script;
use std::process::Command;

fn host_port(server: &TestServer) -> (String, String) {
    let (host, port) = server.mqtt.rsplit_once(':').expect("MQTT address");
    (host.to_string(), port.to_string())
}

fn attacks(server: &TestServer, args: &[&str]) -> Command {
    let (host, port) = host_port(server);
    let mut command = Command::new("python3");
    command.arg(ATTACKS).arg(args[0]).args([&host, &port]).args(&args[1..]);
    command
}

/// A one-shot scenario of mqtt_attacks.py: its whole output, trimmed.
pub(super) fn paho(server: &TestServer, args: &[&str]) -> String {
    let out = attacks(server, args).output().expect("python3");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The admin commands a device over MQTT (QoS 1); the PUBACK line.
fn command(server: &TestServer, device: &str, id: &str, payload: &str) -> String {
    paho(server, &["publish", "ops-1", "token", ADMIN_TOKEN, "5", &format!("devices/{device}/commands/{id}"), payload, "-"])
}

/// A running scenario (`hold`, `listen`): its lines as they come; stdin stays open until
/// `finish`, which is what ends a `hold`.
pub(super) fn scenario(server: &TestServer, args: &[&str]) -> Script {
    Script::spawn(attacks(server, args), &["disconnected", "refused", "timeout"])
}

/// Client id = device id, so a credential of another tenant that names a device's session must
/// neither take it over (disconnecting the device) nor resume it to read its queued commands.
#[tokio::test]
async fn a_foreign_credential_can_neither_take_over_nor_drain_a_devices_mqtt_session() {
    let server = TestServer::start(BIN).await;
    create_tenants(&server, &["acme", "globex"]).await;
    server.register_device("acme-d1", json!({"tenant": "acme"})).await;
    let device = server.register_device("globex-d2", json!({"tenant": "globex"})).await;
    let viewer = server.api_token("acme-viewer", "viewer", Some("acme")).await;
    let hold = ["hold", "globex-d2", "globex-d2", device.as_str(), "5", "devices/globex-d2/commands/#"];
    let door = r#"{"door":"open","pin":"4711"}"#;

    let mut online = scenario(&server, &hold);
    online.wait_for("connected 0");
    assert_eq!(online.wait_for("subscribed"), "subscribed 1");
    for version in ["5", "311"] {
        // 0x85 Client Identifier not valid (3.1.1: return code 2, which paho reports as 133).
        assert_eq!(paho(&server, &["attack", "globex-d2", "token", &viewer, version]), "refused 133", "MQTT {version}");
    }
    // The device was not disconnected: the next command still reaches it.
    assert_eq!(command(&server, "globex-d2", "c1", door), "puback 0");
    assert_eq!(online.wait_for("message"), format!("message devices/globex-d2/commands/c1 {door}"));
    assert_eq!(online.finish(), ["still-connected"]);

    // Offline, its session queues commands; the attacker cannot resume it to read them...
    assert_eq!(command(&server, "globex-d2", "c2", door), "puback 0");
    assert_eq!(paho(&server, &["attack", "globex-d2", "token", &viewer, "5"]), "refused 133", "and receives nothing");
    // ...and the device, back, finds its queued command.
    let mut back = scenario(&server, &hold);
    back.wait_for("connected 0");
    assert_eq!(back.wait_for("message"), format!("message devices/globex-d2/commands/c2 {door}"));
    // The resumed session's command and the SUBACK of the re-subscription race each other;
    // wait for both so "still-connected" is the last thing the device says.
    if !back.seen.iter().any(|line| line.starts_with("subscribed")) {
        assert_eq!(back.wait_for("subscribed"), "subscribed 1");
    }
    assert_eq!(back.finish(), ["still-connected"]);
}

/// A client id that names no device is free to choose, but the session it opens belongs to the
/// token that opened it: another tenant's app using the same id is refused, not handed it.
#[tokio::test]
async fn an_applications_mqtt_session_belongs_to_the_token_that_created_it() {
    let server = TestServer::start(BIN).await;
    create_tenants(&server, &["acme", "globex"]).await;
    let acme = server.api_token("acme-ops", "operator", Some("acme")).await;
    let globex = server.api_token("globex-ops", "operator", Some("globex")).await;

    let mut dashboard = scenario(&server, &["hold", "dashboard-1", "token", &acme, "5"]);
    dashboard.wait_for("connected 0");
    for version in ["5", "311"] {
        assert_eq!(paho(&server, &["attack", "dashboard-1", "token", &globex, version]), "refused 133", "MQTT {version}");
    }
    assert_eq!(dashboard.finish(), ["still-connected"], "the owner stayed connected");
    // Offline the session is still acme's: globex is refused, acme resumes it.
    assert_eq!(paho(&server, &["attack", "dashboard-1", "token", &globex, "5"]), "refused 133");
    assert_eq!(paho(&server, &["attack", "dashboard-1", "token", &acme, "5"]), "connected 0");
}

/// `alarms/<tenant>/<device>` is where the server publishes alarm events; an app that could
/// publish (and retain) there could forge another tenant's alarms. Scoped apps publish only to
/// their tenant's devices and under `tenants/<tenant>/`.
#[tokio::test]
async fn applications_cannot_forge_alarm_events_or_publish_outside_their_tenant() {
    let server = TestServer::start(BIN).await;
    create_tenants(&server, &["acme", "globex"]).await;
    server.register_device("acme-d1", json!({"tenant": "acme"})).await;
    server.register_device("globex-d1", json!({"tenant": "globex"})).await;
    let acme = server.api_token("acme-ops", "operator", Some("acme")).await;
    let forged = r#"{"event":"alarm.raised","alarm":{"device":"globex-d1","tenant":"globex","status":"active"}}"#;
    let publish = |client: &str, token: &str, topic: &str, retain: &str| {
        paho(&server, &["publish", client, "token", token, "5", topic, forged, retain])
    };

    assert_eq!(publish("acme-ops-1", &acme, "alarms/globex/globex-d1", "retain"), "puback 135", "0x87 not authorized");
    assert_eq!(
        publish("acme-ops-1", &acme, "alarms/acme/acme-d1", "retain"),
        "puback 135",
        "alarm events are the server's alone"
    );
    assert_eq!(publish("admin-1", ADMIN_TOKEN, "alarms/globex/globex-d1", "retain"), "puback 135", "even for an unscoped admin");
    // Nothing was retained for a subscriber that comes later.
    assert_eq!(paho(&server, &["listen", "alarm-watch", "token", ADMIN_TOKEN, "1", "alarms/#"]), "subscribed 1\ndone");

    for (topic, expected) in
        [("tenants/acme/dispatch", "puback 0"), ("tenants/globex/dispatch", "puback 135"), ("ops/anything", "puback 135")]
    {
        assert_eq!(publish("acme-ops-1", &acme, topic, "-"), expected, "{topic}");
    }
}

/// An MQTT 5 client over the server's maximum packet size learns why it is cut off: DISCONNECT
/// 0x95, not a reset that paho reports as 128 (unspecified error).
#[tokio::test]
async fn an_oversized_mqtt5_publish_is_told_packet_too_large() {
    let server = TestServer::start_with(BIN, &["--mqtt-max-packet-bytes", "2048"]).await;
    let token = server.register_device("acme-d1", json!({})).await;
    let publish =
        |payload: &str| paho(&server, &["publish", "acme-d1", "acme-d1", &token, "5", "devices/acme-d1/telemetry", payload, "-"]);
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(10_000));
    // paho 2.1.0 reads a DISCONNECT's reason code only when its remaining length is over 2
    // (eclipse-paho/paho.mqtt.python#860): a bare reason code shows as 0 (Success), so the
    // server's DISCONNECT must carry a property (a Reason String) for clients like it to see why.
    assert_eq!(publish(&big), "disconnected 149", "log:\n{}", server.log_text());
    assert_eq!(publish(r#"{"temperature": 1}"#), "puback 0", "the device may go on with smaller packets");
    assert_eq!(server.count("telemetry").await, 1);
}
