//! Broker state survives a kill -9: the broker runs as a child process (examples/broker.rs)
//! that is SIGKILLed, then restarted on the same data directory.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use corral_mqtt::codec::*;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// The example binary cargo builds next to this test (`cargo test` builds examples; when only
/// this test target was asked for, it is built here).
fn broker_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join("broker");
    BUILT.call_once(|| {
        if bin.exists() {
            return;
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "corral-mqtt", "--example", "broker"])
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "building examples/broker failed");
    });
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

struct ChildBroker {
    child: Child,
    addr: SocketAddr,
}

impl ChildBroker {
    fn start(data_dir: &Path, extra: &[&str]) -> ChildBroker {
        let mut child = Command::new(broker_bin())
            .args(["--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening proto=mqtt addr=").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap();
        ChildBroker { child, addr }
    }

    /// SIGKILL: no shutdown code runs, nothing is flushed.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn persistent_session_and_retained_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    for version in [V3, V5] {
        let broker = ChildBroker::start(dir.path(), &[]);
        // A persistent subscriber goes offline.
        let mut sub = Raw::ok(broker.addr, version, ConnectOpts::new("keeper").persistent(3600)).await;
        sub.subscribe(1, "keep/#", QoS::AtLeastOnce).await;
        sub.subscribe(2, "keep2/#", QoS::ExactlyOnce).await;
        drop(sub);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut p = Raw::ok(broker.addr, V5, ConnectOpts::new("p")).await;
        for i in 1..=5u16 {
            p.publish("keep/x", format!("m{i}").as_bytes(), QoS::AtLeastOnce, i, false).await;
            // Acknowledged means durable: after this PUBACK a kill -9 must not lose it.
            assert_eq!(p.recv().await, Packet::PubAck(ack(i)));
        }
        p.publish("keep2/x", b"q2", QoS::ExactlyOnce, 9, false).await;
        assert_eq!(p.recv().await, Packet::PubRec(ack(9)));
        p.publish("retained/x", b"kept", QoS::AtLeastOnce, 10, true).await;
        assert_eq!(p.recv().await, Packet::PubAck(ack(10)));
        broker.kill9();

        let broker = ChildBroker::start(dir.path(), &[]);
        let (mut sub, connack) = Raw::connect(broker.addr, version, ConnectOpts::new("keeper").persistent(3600)).await;
        assert!(connack.session_present, "session survived");
        let mut got = Vec::new();
        for _ in 0..6 {
            let m = sub.recv_publish().await;
            match m.qos {
                QoS::AtLeastOnce => sub.send(Packet::PubAck(ack(m.packet_id))).await,
                _ => {
                    sub.send(Packet::PubRec(ack(m.packet_id))).await;
                    assert_eq!(sub.recv().await, Packet::PubRel(ack(m.packet_id)));
                    sub.send(Packet::PubComp(ack(m.packet_id))).await;
                }
            }
            got.push(String::from_utf8_lossy(&m.payload).to_string());
        }
        assert_eq!(got, ["m1", "m2", "m3", "m4", "m5", "q2"]);
        // The subscriptions survived too.
        let mut p = Raw::ok(broker.addr, V5, ConnectOpts::new("p")).await;
        p.publish("keep/y", b"live", QoS::AtMostOnce, 0, false).await;
        assert_eq!(&sub.recv_publish().await.payload[..], b"live");
        // The publisher's inbound QoS 2 id survived: a resend is not delivered twice.
        let (mut p2, c) = Raw::connect(broker.addr, V5, ConnectOpts::new("p")).await;
        assert!(!c.session_present); // "p" used clean start; its QoS 2 state is gone with it
        drop(p2.recv_within(Duration::from_millis(10)).await);
        // Retained survived.
        let mut r = Raw::ok(broker.addr, version, ConnectOpts::new("r")).await;
        r.subscribe(1, "retained/#", QoS::AtMostOnce).await;
        let m = r.recv_publish().await;
        assert!(m.retain);
        assert_eq!(&m.payload[..], b"kept");
        sub.send(Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS))).await;
        drop(p);
        broker.kill9();
        // Clean up for the next version.
        let broker = ChildBroker::start(dir.path(), &[]);
        let _ = Raw::ok(broker.addr, version, ConnectOpts::new("keeper")).await;
        let mut p = Raw::ok(broker.addr, V5, ConnectOpts::new("p")).await;
        p.publish("retained/x", b"", QoS::AtLeastOnce, 1, true).await;
        p.recv().await;
        broker.kill9();
    }
}

#[tokio::test]
async fn inbound_qos2_and_inflight_state_survive_kill_9_with_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshot every few ops so recovery goes through snapshot + log.
    let broker = ChildBroker::start(dir.path(), &["--snapshot-every", "3"]);
    let mut sub = Raw::ok(broker.addr, V5, ConnectOpts::new("sub").persistent(600)).await;
    sub.subscribe(1, "s/#", QoS::ExactlyOnce).await;
    let mut p = Raw::ok(broker.addr, V5, ConnectOpts::new("pub").persistent(600)).await;
    for i in 1..=20u16 {
        p.publish("s/x", format!("{i}").as_bytes(), QoS::ExactlyOnce, i, false).await;
        assert_eq!(p.recv().await, Packet::PubRec(ack(i)));
        if i != 20 {
            p.send(Packet::PubRel(ack(i))).await;
            assert_eq!(p.recv().await, Packet::PubComp(ack(i)));
        }
    }
    // The subscriber takes everything, completes 1..=10, PUBRECs 11, leaves 12.. unacked.
    let mut ids = Vec::new();
    for _ in 0..20 {
        let m = sub.recv_publish().await;
        ids.push((m.packet_id, String::from_utf8_lossy(&m.payload).to_string()));
        if sub_window_full(&ids) {
            break;
        }
    }
    for (pid, payload) in ids.iter().filter(|(_, p)| p.parse::<u16>().unwrap() <= 10) {
        let _ = payload;
        sub.send(Packet::PubRec(ack(*pid))).await;
        assert_eq!(sub.recv().await, Packet::PubRel(ack(*pid)));
        sub.send(Packet::PubComp(ack(*pid))).await;
    }
    let eleven = ids.iter().find(|(_, p)| p == "11").unwrap().0;
    sub.send(Packet::PubRec(ack(eleven))).await;
    assert_eq!(sub.recv().await, Packet::PubRel(ack(eleven)));
    tokio::time::sleep(Duration::from_millis(300)).await; // let the (unacknowledged) log catch up
    broker.kill9();

    let broker = ChildBroker::start(dir.path(), &[]);
    // Publisher: packet id 20 is still held, a resend is answered but not delivered again.
    let (mut p, c) = Raw::connect(broker.addr, V5, ConnectOpts::new("pub").persistent(600)).await;
    assert!(c.session_present);
    let mut again = publish("s/x", b"20", QoS::ExactlyOnce, 20, false);
    again.dup = true;
    p.send(Packet::Publish(again)).await;
    assert_eq!(p.recv().await, Packet::PubRec(ack(20)));
    p.send(Packet::PubRel(ack(20))).await;
    assert_eq!(p.recv().await, Packet::PubComp(ack(20)));

    let (mut sub, c) = Raw::connect(broker.addr, V5, ConnectOpts::new("sub").persistent(600)).await;
    assert!(c.session_present);
    let mut pubrels = Vec::new();
    let mut payloads = Vec::new();
    while let Some(packet) = sub.recv_within(Duration::from_millis(700)).await {
        match packet {
            Packet::PubRel(a) => {
                pubrels.push(a.packet_id);
                sub.send(Packet::PubComp(ack(a.packet_id))).await;
            }
            Packet::Publish(m) => {
                payloads.push(String::from_utf8_lossy(&m.payload).to_string());
                sub.send(Packet::PubRec(ack(m.packet_id))).await;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pubrels.first(), Some(&eleven), "PUBREL resent for the PUBREC'd message");
    let want: Vec<String> = (12..=20).map(|i| i.to_string()).collect();
    assert_eq!(payloads, want, "unacknowledged ones resent, none of 1..=11 again");
}

/// The server's default window is 128, so all 20 arrive; stop once we have them.
fn sub_window_full(ids: &[(u16, String)]) -> bool {
    ids.len() >= 20
}
