//! What the platform learns about delivery, on raw sockets under MQTT 3.1.1 and 5: receipts for
//! what clients acknowledged (also after a restart, from a persistent session), what a session
//! still holds, who subscribes where, and the subscriptions the hooks are told of. Then the
//! commands door on top of them: sent, delivered, and never published twice.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use corral_model::{DeviceId, Door};
use corral_mqtt::codec::*;
use corral_mqtt::*;
use corral_services::{Carried, Command, CommandBus, CommandProgress, Commands};
use tokio::sync::{broadcast, mpsc};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const BOTH: [ProtocolVersion; 2] = [V3, V5];
const QUIET: Duration = Duration::from_millis(300);

async fn receipt(receipts: &mut mpsc::Receiver<Acknowledged>) -> Acknowledged {
    tokio::time::timeout(WAIT, receipts.recv()).await.expect("a receipt in time").expect("receipts open")
}

async fn no_receipt(receipts: &mut mpsc::Receiver<Acknowledged>) {
    if let Ok(got) = tokio::time::timeout(QUIET, receipts.recv()).await {
        panic!("expected no receipt, got {got:?}");
    }
}

fn taken_by(client: &str, topic: &str, device: Option<&str>) -> Acknowledged {
    Acknowledged { client_id: Arc::from(client), topic: Arc::from(topic), device: device.map(Arc::from) }
}

#[tokio::test]
async fn receipts_come_with_a_puback_a_pubcomp_or_a_written_qos0_copy() {
    for version in BOTH {
        let t = start(open_config()).await;
        let mut receipts = t.broker.acknowledgements("devices/+/commands/+", 16).unwrap();
        let mut dev = Raw::ok(t.addr, version, ConnectOpts::new("dev1").user("dev1", "pw1")).await;
        dev.subscribe(1, "devices/dev1/commands/+", QoS::AtLeastOnce).await;
        dev.subscribe(2, "devices/dev1/commands/+/response", QoS::AtLeastOnce).await;

        // QoS 1: the receipt comes with the PUBACK, not with the PUBLISH.
        t.broker.publish_from_platform("devices/dev1/commands/c1", "go", QoS::AtLeastOnce, false).await.unwrap();
        let m = dev.recv_publish().await;
        no_receipt(&mut receipts).await;
        dev.send(Packet::PubAck(ack(m.packet_id))).await;
        assert_eq!(receipt(&mut receipts).await, taken_by("dev1", "devices/dev1/commands/c1", Some("dev1")), "{version:?}");

        // Another topic than the filter's is not receipted.
        t.broker.publish_from_platform("devices/dev1/commands/c1/response", "ok", QoS::AtLeastOnce, false).await.unwrap();
        let m = dev.recv_publish().await;
        dev.send(Packet::PubAck(ack(m.packet_id))).await;
        no_receipt(&mut receipts).await;

        // QoS 2: with the PUBCOMP that completes it.
        dev.subscribe(3, "devices/dev1/commands/+", QoS::ExactlyOnce).await;
        t.broker.publish_from_platform("devices/dev1/commands/c2", "go", QoS::ExactlyOnce, false).await.unwrap();
        let m = dev.recv_publish().await;
        dev.send(Packet::PubRec(ack(m.packet_id))).await;
        assert_eq!(dev.recv().await, Packet::PubRel(ack(m.packet_id)));
        no_receipt(&mut receipts).await;
        dev.send(Packet::PubComp(ack(m.packet_id))).await;
        assert_eq!(receipt(&mut receipts).await.topic.as_ref(), "devices/dev1/commands/c2");

        // QoS 0 acknowledges nothing: written is delivered.
        dev.subscribe(4, "devices/dev1/commands/+", QoS::AtMostOnce).await;
        t.broker.publish_from_platform("devices/dev1/commands/c3", "go", QoS::AtLeastOnce, false).await.unwrap();
        assert_eq!(dev.recv_publish().await.qos, QoS::AtMostOnce);
        assert_eq!(receipt(&mut receipts).await.topic.as_ref(), "devices/dev1/commands/c3");

        if version == V5 {
            // An MQTT 5 client that refuses the message (an error reason) did not take it.
            dev.subscribe(5, "devices/dev1/commands/+", QoS::AtLeastOnce).await;
            t.broker.publish_from_platform("devices/dev1/commands/c4", "go", QoS::AtLeastOnce, false).await.unwrap();
            let m = dev.recv_publish().await;
            dev.send(Packet::PubAck(PubAck::new(m.packet_id, ReasonCode::UNSPECIFIED_ERROR))).await;
            no_receipt(&mut receipts).await;
        }
        // An application's receipt says it is no device.
        let mut app = Raw::ok(t.addr, version, ConnectOpts::new("watcher").user("admin", "secret")).await;
        app.subscribe(1, "devices/+/commands/+", QoS::AtLeastOnce).await;
        t.broker.publish_from_platform("devices/dev2/commands/c5", "go", QoS::AtLeastOnce, false).await.unwrap();
        let m = app.recv_publish().await;
        app.send(Packet::PubAck(ack(m.packet_id))).await;
        assert_eq!(receipt(&mut receipts).await, taken_by("watcher", "devices/dev2/commands/c5", None));
    }
}

#[tokio::test]
async fn a_message_redelivered_from_a_persistent_session_after_a_restart_is_receipted() {
    let dir = tempfile::tempdir().unwrap();
    let config = || BrokerConfig { data_dir: Some(dir.path().to_path_buf()), ..open_config() };
    for version in BOTH {
        let t = start(config()).await;
        let opts = || ConnectOpts::new("dev1").user("dev1", "pw1").persistent(3600);
        let mut dev = Raw::ok(t.addr, version, opts()).await;
        dev.subscribe(1, "devices/dev1/commands/+", QoS::AtLeastOnce).await;
        // One in flight (sent, never acknowledged), one queued while the device is away.
        t.broker.publish_from_platform("devices/dev1/commands/inflight", "1", QoS::AtLeastOnce, false).await.unwrap();
        assert_eq!(&dev.recv_publish().await.payload[..], b"1");
        drop(dev);
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.broker.publish_from_platform("devices/dev1/commands/queued", "2", QoS::AtLeastOnce, false).await.unwrap();
        for topic in ["devices/dev1/commands/inflight", "devices/dev1/commands/queued"] {
            assert!(t.broker.session_holds("dev1", topic), "{topic}");
        }
        t.broker.shutdown(Duration::from_secs(2)).await;

        // Only the state log remembers them now.
        let t = start(config()).await;
        for topic in ["devices/dev1/commands/inflight", "devices/dev1/commands/queued"] {
            assert!(t.broker.session_holds("dev1", topic), "{topic} survived the restart ({version:?})");
        }
        let mut receipts = t.broker.acknowledgements("devices/dev1/commands/#", 16).unwrap();
        let (mut dev, connack) = Raw::connect(t.addr, version, opts()).await;
        assert!(connack.session_present);
        let mut taken = Vec::new();
        for _ in 0..2 {
            let m = dev.recv_publish().await;
            dev.send(Packet::PubAck(ack(m.packet_id))).await;
            taken.push(receipt(&mut receipts).await.topic.to_string());
        }
        assert_eq!(taken, ["devices/dev1/commands/inflight", "devices/dev1/commands/queued"]);
        assert!(!t.broker.session_holds("dev1", "devices/dev1/commands/queued"), "acknowledged: no longer held");
        // Leave nothing behind for the next version.
        let _ = Raw::ok(t.addr, version, ConnectOpts::new("dev1").user("dev1", "pw1")).await;
        t.broker.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
async fn a_session_holds_a_message_until_its_client_acknowledges_it() {
    for version in BOTH {
        let t = start(open_config()).await;
        let topic = "devices/dev1/commands/c1";
        assert!(!t.broker.session_holds("dev1", topic), "no session yet");
        let opts = || ConnectOpts::new("dev1").user("dev1", "pw1").persistent(600);
        let mut dev = Raw::ok(t.addr, version, opts()).await;
        dev.subscribe(1, "devices/dev1/commands/+", QoS::AtLeastOnce).await;
        let online = t.broker.subscribers(topic);
        assert_eq!(online, [Recipient { client_id: Arc::from("dev1"), online: true, device: Some(Arc::from("dev1")) }]);
        assert!(t.broker.subscribers("devices/dev2/commands/c1").is_empty());
        drop(dev);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!t.broker.subscribers(topic)[0].online, "{version:?}");

        // Queued for the offline session: held, and the publish says who queued it.
        let queued_for =
            t.broker.publish_with_properties(topic, "go", QoS::AtLeastOnce, None, PublishProperties::default()).await.unwrap();
        assert_eq!(queued_for.iter().map(|r| (&*r.client_id, r.online)).collect::<Vec<_>>(), [("dev1", false)]);
        assert!(t.broker.session_holds("dev1", topic));
        assert!(!t.broker.session_holds("dev1", "devices/dev1/commands/c2"), "another topic");
        assert!(!t.broker.session_holds("dev2", topic), "another session");
        // In flight: still held.
        let mut dev = Raw::ok(t.addr, version, opts()).await;
        let m = dev.recv_publish().await;
        assert!(t.broker.session_holds("dev1", topic));
        dev.send(Packet::PubAck(ack(m.packet_id))).await;
        dev.send(Packet::PingReq).await;
        assert_eq!(dev.recv().await, Packet::PingResp);
        assert!(!t.broker.session_holds("dev1", topic), "acknowledged");
    }
}

#[tokio::test]
async fn the_hooks_hear_granted_subscriptions_and_those_a_resumed_session_has() {
    for version in BOTH {
        let t = start(open_config()).await;
        let opts = || ConnectOpts::new("dev1").user("dev1", "pw1").persistent(600);
        let mut dev = Raw::ok(t.addr, version, opts()).await;
        dev.subscribe(1, "devices/dev1/commands/+", QoS::AtLeastOnce).await;
        dev.subscribe(2, "devices/dev2/commands/+", QoS::AtLeastOnce).await; // denied: not told
        drop(dev);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_dev, connack) = Raw::connect(t.addr, version, opts()).await;
        assert!(connack.session_present);
        // A fresh session has nothing to resume.
        let _fresh = Raw::ok(t.addr, version, ConnectOpts::new("dev2").user("dev2", "pw2")).await;
        let events: Vec<String> = t
            .hooks
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.contains("subscribed") || e.contains("resumed"))
            .cloned()
            .collect();
        assert_eq!(events, ["subscribed dev1 devices/dev1/commands/+", "resumed dev1 devices/dev1/commands/+"], "{version:?}");
    }
}

/// The broker, the command bus and the door between them, with the bus's reports at hand.
struct CommandsOverMqtt {
    t: TestBroker,
    bus: Arc<CommandBus>,
    progress: broadcast::Receiver<CommandProgress>,
}

async fn carrying() -> CommandsOverMqtt {
    let t = start(open_config()).await;
    let bus = Arc::new(CommandBus::new(64));
    let progress = bus.progress_reports();
    carry_commands(t.broker.clone(), bus.clone()).unwrap();
    CommandsOverMqtt { t, bus, progress }
}

impl CommandsOverMqtt {
    async fn send(&self, device: &str, id: &str) {
        let device = DeviceId::new(device).unwrap();
        let body = format!(r#"{{"id":"{id}","name":"reboot","payload":null}}"#);
        self.bus.send(Command::new(device, None, id, body.into_bytes(), None)).await.unwrap();
    }

    async fn report(&mut self) -> (String, String, Carried) {
        let p = tokio::time::timeout(WAIT, self.progress.recv()).await.expect("a report in time").unwrap();
        assert_eq!(p.door, Door::Mqtt);
        (p.device.to_string(), p.id, p.step)
    }

    async fn no_report(&mut self) {
        if let Ok(got) = tokio::time::timeout(QUIET, self.progress.recv()).await {
            panic!("expected no report, got {got:?}");
        }
    }
}

fn reported(device: &str, id: &str, step: Carried) -> (String, String, Carried) {
    (device.to_string(), id.to_string(), step)
}

#[tokio::test]
async fn a_command_is_reported_sent_then_delivered_with_its_response_topic_and_correlation_data() {
    for version in BOTH {
        let mut c = carrying().await;
        let mut dev = Raw::ok(c.t.addr, version, ConnectOpts::new("dev1").user("dev1", "pw1")).await;
        dev.subscribe(1, "devices/dev1/commands/+", QoS::AtLeastOnce).await;
        c.send("dev1", "cmd_1").await;
        let m = dev.recv_publish().await;
        assert_eq!((&*m.topic, m.qos), ("devices/dev1/commands/cmd_1", QoS::AtLeastOnce));
        if version == V5 {
            assert_eq!(m.properties.response_topic.as_deref(), Some("devices/dev1/commands/cmd_1/response"));
            assert_eq!(m.properties.correlation_data, Some(Bytes::from_static(b"cmd_1")));
        }
        assert_eq!(c.report().await, reported("dev1", "cmd_1", Carried::Sent));
        // Handed over again while in flight: the device has it, it is not published twice.
        c.send("dev1", "cmd_1").await;
        dev.expect_silence(QUIET).await;
        dev.send(Packet::PubAck(ack(m.packet_id))).await;
        assert_eq!(c.report().await, reported("dev1", "cmd_1", Carried::Delivered), "{version:?}");
        // And again once delivered (the tracker had not recorded it yet): still not twice.
        c.send("dev1", "cmd_1").await;
        dev.expect_silence(QUIET).await;
        c.no_report().await;
    }
}

#[tokio::test]
async fn a_command_for_an_offline_persistent_session_waits_there_and_arrives_once() {
    for version in BOTH {
        let mut c = carrying().await;
        let opts = || ConnectOpts::new("dev1").user("dev1", "pw1").persistent(600);
        let mut dev = Raw::ok(c.t.addr, version, opts()).await;
        dev.subscribe(1, "devices/dev1/commands/+", QoS::AtLeastOnce).await;
        drop(dev);
        tokio::time::sleep(Duration::from_millis(100)).await;

        // Queued in the session: nothing to report yet, and handing it over again adds nothing.
        c.send("dev1", "cmd_2").await;
        c.no_report().await;
        c.send("dev1", "cmd_2").await;
        // A device with no session at all: nobody holds it, nothing is reported.
        c.send("dev2", "cmd_3").await;
        c.no_report().await;

        let mut dev = Raw::ok(c.t.addr, version, opts()).await;
        let m = dev.recv_publish().await;
        assert_eq!(&*m.topic, "devices/dev1/commands/cmd_2");
        dev.send(Packet::PubAck(ack(m.packet_id))).await;
        dev.expect_silence(QUIET).await;
        assert_eq!(c.report().await, reported("dev1", "cmd_2", Carried::Delivered), "{version:?}");
    }
}

#[tokio::test]
async fn a_gateway_takes_its_childs_commands_and_an_application_watching_delivers_nothing() {
    let mut c = carrying().await;
    let mut watcher = Raw::ok(c.t.addr, V5, ConnectOpts::new("watcher").user("admin", "secret")).await;
    watcher.subscribe(1, "devices/+/commands/+", QoS::AtLeastOnce).await;
    let mut gateway = Raw::ok(c.t.addr, V3, ConnectOpts::new("dev1").user("dev1", "pw1")).await;
    gateway.subscribe(1, "devices/child1/commands/+", QoS::AtLeastOnce).await;

    c.send("child1", "cmd_4").await;
    let seen = watcher.recv_publish().await;
    watcher.send(Packet::PubAck(ack(seen.packet_id))).await;
    let m = gateway.recv_publish().await;
    assert_eq!(&*m.topic, "devices/child1/commands/cmd_4");
    assert_eq!(c.report().await, reported("child1", "cmd_4", Carried::Sent));
    c.no_report().await; // the watcher's PUBACK is not the device's
    // The gateway holds it: handed over again, not published again (the watcher gets no copy).
    c.send("child1", "cmd_4").await;
    gateway.expect_silence(QUIET).await;
    gateway.send(Packet::PubAck(ack(m.packet_id))).await;
    assert_eq!(c.report().await, reported("child1", "cmd_4", Carried::Delivered));
    watcher.expect_silence(QUIET).await;
}
