//! Protocol behaviour on raw sockets (hand-written packets), each case under 3.1.1 and 5 where
//! the protocols differ.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use corral_mqtt::codec::*;
use corral_mqtt::*;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const BOTH: [ProtocolVersion; 2] = [V3, V5];

fn disconnect_reason(packets: &[Packet]) -> Option<ReasonCode> {
    packets.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    })
}

#[tokio::test]
async fn malformed_packet_gets_its_answer_and_the_server_keeps_serving() {
    let t = start(open_config()).await;
    let mut watcher = Raw::ok(t.addr, V5, ConnectOpts::new("watcher")).await;
    watcher.subscribe(1, "ok/#", QoS::AtMostOnce).await;
    for version in BOTH {
        let mut bad = Raw::ok(t.addr, version, ConnectOpts::new("bad")).await;
        // PUBLISH whose topic is invalid UTF-8.
        bad.send_bytes(&[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, b'x']).await;
        let got = bad.expect_closed().await;
        match version {
            V5 => assert_eq!(disconnect_reason(&got), Some(ReasonCode::MALFORMED_PACKET)),
            V3 => assert!(got.is_empty(), "3.1.1 is just closed: {got:?}"),
        }
        // Reserved fixed header flags on SUBSCRIBE: also malformed.
        let mut bad = Raw::ok(t.addr, version, ConnectOpts::new("bad2")).await;
        bad.send_bytes(&[0x80, 0x06, 0, 1, 0, 1, b'a', 0]).await;
        let got = bad.expect_closed().await;
        if version == V5 {
            assert_eq!(disconnect_reason(&got), Some(ReasonCode::MALFORMED_PACKET));
        }
        // A second CONNECT is a protocol error.
        let mut bad = Raw::ok(t.addr, version, ConnectOpts::new("bad3")).await;
        bad.send(Packet::Connect(Box::new(Connect {
            version,
            client_id: "x".into(),
            clean_start: true,
            keep_alive_secs: 0,
            properties: Properties::default(),
            will: None,
            username: None,
            password: None,
        })))
        .await;
        let got = bad.expect_closed().await;
        if version == V5 {
            assert_eq!(disconnect_reason(&got), Some(ReasonCode::PROTOCOL_ERROR));
        }
    }
    let mut publisher = Raw::ok(t.addr, V3, ConnectOpts::new("publisher")).await;
    publisher.publish("ok/1", b"still here", QoS::AtMostOnce, 0, false).await;
    assert_eq!(&watcher.recv_publish().await.payload[..], b"still here");
    assert!(t.broker.metrics().protocol_errors >= 6);
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_in_its_own_version() {
    let t = start(open_config()).await;
    let connect = |level: u8| {
        let mut v = vec![0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', level, 2, 0, 60, 0, 0];
        if level == 5 {
            v[1] += 1;
            v.push(0);
        }
        v
    };
    let mut c = Raw::tcp(t.addr, V3).await;
    c.send_bytes(&connect(3)).await;
    assert_eq!(c.expect_closed().await.len(), 1);
    let mut c = Raw::tcp(t.addr, V3).await;
    c.send_bytes(&connect(3)).await;
    let mut raw = [0u8; 8];
    use tokio::io::AsyncReadExt;
    let n = c.stream.read(&mut raw).await.unwrap();
    assert_eq!(&raw[..n], &[0x20, 0x02, 0x00, 0x01]);
    let mut c = Raw::tcp(t.addr, V5).await;
    c.send_bytes(&connect(6)).await;
    let n = c.stream.read(&mut raw).await.unwrap();
    assert_eq!(&raw[..n], &[0x20, 0x03, 0x00, 0x84, 0x00]);
}

#[tokio::test]
async fn client_sending_no_connect_is_closed_after_the_timeout() {
    let t = start(BrokerConfig { connect_timeout: Duration::from_millis(300), ..open_config() }).await;
    let started = Instant::now();
    let mut idle = Raw::tcp(t.addr, V3).await;
    assert!(idle.expect_closed().await.is_empty());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn keep_alive_timeout_closes_and_publishes_the_will() {
    let t = start(open_config()).await;
    let mut watcher = Raw::ok(t.addr, V5, ConnectOpts::new("watcher")).await;
    watcher.subscribe(1, "wills/#", QoS::AtLeastOnce).await;
    for version in BOTH {
        let mut opts = ConnectOpts::new("sleepy");
        opts.keep_alive_secs = 1;
        opts.will = Some(LastWill {
            topic: format!("wills/{}", version.level()),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        });
        let started = Instant::now();
        let mut sleepy = Raw::ok(t.addr, version, opts).await;
        let got = sleepy.expect_closed().await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1400) && took < Duration::from_millis(3500), "{took:?}");
        if version == V5 {
            assert_eq!(disconnect_reason(&got), Some(ReasonCode::KEEP_ALIVE_TIMEOUT));
        }
        let will = watcher.recv_publish().await;
        assert_eq!(&*will.topic, format!("wills/{}", version.level()));
        watcher.send(Packet::PubAck(ack(will.packet_id))).await;
    }
    assert_eq!(t.broker.metrics().keep_alive_timeouts, 2);
}

#[tokio::test]
async fn pings_keep_a_connection_alive() {
    let t = start(open_config()).await;
    let mut opts = ConnectOpts::new("pinger");
    opts.keep_alive_secs = 1;
    let mut c = Raw::ok(t.addr, V3, opts).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        c.send(Packet::PingReq).await;
        assert_eq!(c.recv().await, Packet::PingResp);
    }
}

#[tokio::test]
async fn oversize_packet_is_rejected_with_0x95() {
    let t = start(BrokerConfig { max_packet_size: 1024, ..open_config() }).await;
    for version in BOTH {
        let (mut c, connack) = Raw::connect(t.addr, version, ConnectOpts::new("big")).await;
        if version == V5 {
            assert_eq!(connack.properties.maximum_packet_size, Some(1024));
        }
        c.publish("t", &[0u8; 2000], QoS::AtMostOnce, 0, false).await;
        let got = c.expect_closed().await;
        match version {
            V5 => assert_eq!(disconnect_reason(&got), Some(ReasonCode::PACKET_TOO_LARGE)),
            V3 => assert!(got.is_empty()),
        }
    }
}

#[tokio::test]
async fn session_takeover_disconnects_the_first_connection() {
    let t = start(open_config()).await;
    for version in BOTH {
        let mut first = Raw::ok(t.addr, version, ConnectOpts::new("twin").persistent(60)).await;
        first.subscribe(1, "twin/t", QoS::AtLeastOnce).await;
        let (mut second, connack) = Raw::connect(t.addr, version, ConnectOpts::new("twin").persistent(60)).await;
        assert!(connack.session_present);
        let got = first.expect_closed().await;
        match version {
            V5 => assert_eq!(disconnect_reason(&got), Some(ReasonCode::SESSION_TAKEN_OVER)),
            V3 => assert!(got.is_empty()),
        }
        // The subscription came along with the session.
        let mut p = Raw::ok(t.addr, V3, ConnectOpts::new("p")).await;
        p.publish("twin/t", b"x", QoS::AtMostOnce, 0, false).await;
        assert_eq!(&second.recv_publish().await.payload[..], b"x");
        second.send(Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS))).await;
        // Clean start throws the session away.
        let (_third, connack) = Raw::connect(t.addr, version, ConnectOpts::new("twin")).await;
        assert!(!connack.session_present);
    }
    assert!(t.broker.metrics().takeovers >= 2);
}

#[tokio::test]
async fn topic_aliases_work_both_ways() {
    let t = start(open_config()).await;
    let mut opts = ConnectOpts::new("sub");
    opts.properties.topic_alias_maximum = Some(2);
    let mut sub = Raw::ok(t.addr, V5, opts).await;
    sub.subscribe(1, "alias/#", QoS::AtMostOnce).await;
    let (mut publisher, connack) = Raw::connect(t.addr, V5, ConnectOpts::new("pub")).await;
    assert_eq!(connack.properties.topic_alias_maximum, Some(64));
    let aliased = |topic: &str, alias: u16, payload: &[u8]| {
        let mut p = publish(topic, payload, QoS::AtMostOnce, 0, false);
        p.properties.topic_alias = Some(alias);
        Packet::Publish(p)
    };
    publisher.send(aliased("alias/a", 1, b"1")).await;
    publisher.send(aliased("", 1, b"2")).await;
    publisher.publish("alias/b", b"3", QoS::AtMostOnce, 0, false).await;
    publisher.publish("alias/c", b"4", QoS::AtMostOnce, 0, false).await;
    publisher.publish("alias/b", b"5", QoS::AtMostOnce, 0, false).await;
    let got: Vec<Publish> = futures_collect(&mut sub, 5).await;
    let seen: Vec<(String, Option<u16>, String)> =
        got.iter().map(|p| (p.topic.to_string(), p.properties.topic_alias, String::from_utf8_lossy(&p.payload).into())).collect();
    assert_eq!(
        seen,
        vec![
            ("alias/a".into(), Some(1), "1".into()),
            ("".into(), Some(1), "2".into()),
            ("alias/b".into(), Some(2), "3".into()),
            ("alias/c".into(), None, "4".into()), // client allows only 2 aliases
            ("".into(), Some(2), "5".into()),
        ]
    );
    // Unknown alias without topic: protocol error; alias above the maximum: 0x94.
    publisher.send(aliased("alias/z", 100, b"x")).await;
    assert_eq!(disconnect_reason(&publisher.expect_closed().await), Some(ReasonCode::TOPIC_ALIAS_INVALID));
    let mut p2 = Raw::ok(t.addr, V5, ConnectOpts::new("pub2")).await;
    p2.send(aliased("", 3, b"x")).await;
    assert_eq!(disconnect_reason(&p2.expect_closed().await), Some(ReasonCode::PROTOCOL_ERROR));
}

async fn futures_collect(c: &mut Raw, n: usize) -> Vec<Publish> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.recv_publish().await);
    }
    out
}

#[tokio::test]
async fn shared_subscription_distributes_round_robin() {
    let t = start(open_config()).await;
    let mut a = Raw::ok(t.addr, V5, ConnectOpts::new("a")).await;
    let mut b = Raw::ok(t.addr, V3, ConnectOpts::new("b")).await;
    let mut all = Raw::ok(t.addr, V5, ConnectOpts::new("all")).await;
    a.subscribe(1, "$share/g/jobs/#", QoS::AtMostOnce).await;
    b.subscribe(1, "$share/g/jobs/#", QoS::AtMostOnce).await;
    all.subscribe(1, "jobs/#", QoS::AtMostOnce).await;
    let mut p = Raw::ok(t.addr, V3, ConnectOpts::new("p")).await;
    for i in 0..10 {
        p.publish("jobs/x", format!("{i}").as_bytes(), QoS::AtMostOnce, 0, false).await;
    }
    assert_eq!(futures_collect(&mut all, 10).await.len(), 10);
    let mut count = [0, 0];
    for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
        while c.recv_within(Duration::from_millis(300)).await.is_some() {
            count[i] += 1;
        }
    }
    assert_eq!(count, [5, 5]);
}

fn will(topic: &str, delay_secs: Option<u32>) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties { will_delay_interval: delay_secs, ..Properties::default() },
    }
}

#[tokio::test]
async fn will_is_sent_on_abrupt_close_and_on_0x04_but_not_on_clean_disconnect() {
    let t = start(open_config()).await;
    let mut watcher = Raw::ok(t.addr, V5, ConnectOpts::new("watcher")).await;
    watcher.subscribe(1, "will/#", QoS::AtMostOnce).await;
    for version in BOTH {
        let mut opts = ConnectOpts::new("w1");
        opts.will = Some(will("will/abrupt", None));
        let c = Raw::ok(t.addr, version, opts).await;
        drop(c);
        assert_eq!(&*watcher.recv_publish().await.topic, "will/abrupt");

        let mut opts = ConnectOpts::new("w2");
        opts.will = Some(will("will/clean", None));
        let mut c = Raw::ok(t.addr, version, opts).await;
        c.send(Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION))).await;
        c.expect_closed().await;
        watcher.expect_silence(Duration::from_millis(300)).await;
    }
    let mut opts = ConnectOpts::new("w3");
    opts.will = Some(will("will/with-will", None));
    let mut c = Raw::ok(t.addr, V5, opts).await;
    c.send(Packet::Disconnect(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL))).await;
    assert_eq!(&*watcher.recv_publish().await.topic, "will/with-will");
}

#[tokio::test]
async fn will_delay_waits_and_a_reconnect_cancels_it() {
    let t = start(open_config()).await;
    let mut watcher = Raw::ok(t.addr, V5, ConnectOpts::new("watcher")).await;
    watcher.subscribe(1, "will/#", QoS::AtMostOnce).await;
    let opts = || {
        let mut o = ConnectOpts::new("delayed").persistent(30);
        o.will = Some(will("will/delayed", Some(1)));
        o
    };
    // Reconnecting within the delay: no will.
    drop(Raw::ok(t.addr, V5, opts()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = Raw::ok(t.addr, V5, opts()).await;
    watcher.expect_silence(Duration::from_millis(1500)).await;
    // Staying away: the will arrives after about a second.
    let started = Instant::now();
    drop(back);
    let w = watcher.recv_publish().await;
    assert_eq!(&*w.topic, "will/delayed");
    assert!(started.elapsed() >= Duration::from_millis(800), "{:?}", started.elapsed());
    // Will delay longer than the session expiry: sent when the session ends.
    let mut o = ConnectOpts::new("short").persistent(1);
    o.will = Some(will("will/session-end", Some(100)));
    drop(Raw::ok(t.addr, V5, o).await);
    let started = Instant::now();
    assert_eq!(&*watcher.recv_publish().await.topic, "will/session-end");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn qos2_inbound_is_exactly_once_across_a_reconnect() {
    let t = start(open_config()).await;
    for version in BOTH {
        let mut sub = Raw::ok(t.addr, V5, ConnectOpts::new("sub")).await;
        sub.subscribe(1, "q2/t", QoS::ExactlyOnce).await;
        let mut p = Raw::ok(t.addr, version, ConnectOpts::new("q2pub").persistent(60)).await;
        p.publish("q2/t", b"once", QoS::ExactlyOnce, 7, false).await;
        assert_eq!(p.recv().await, Packet::PubRec(ack(7)));
        drop(p); // no PUBREL: the id stays held in the session
        let (mut p, connack) = Raw::connect(t.addr, version, ConnectOpts::new("q2pub").persistent(60)).await;
        assert!(connack.session_present);
        let mut again = publish("q2/t", b"once", QoS::ExactlyOnce, 7, false);
        again.dup = true;
        p.send(Packet::Publish(again)).await;
        assert_eq!(p.recv().await, Packet::PubRec(ack(7)));
        p.send(Packet::PubRel(ack(7))).await;
        assert_eq!(p.recv().await, Packet::PubComp(ack(7)));
        // The id is free again: a new message under it is delivered.
        p.publish("q2/t", b"twice", QoS::ExactlyOnce, 7, false).await;
        assert_eq!(p.recv().await, Packet::PubRec(ack(7)));
        p.send(Packet::PubRel(ack(7))).await;
        assert_eq!(p.recv().await, Packet::PubComp(ack(7)));

        let first = sub.recv_publish().await;
        let second = sub.recv_publish().await;
        assert_eq!((&first.payload[..], &second.payload[..]), (&b"once"[..], &b"twice"[..]));
        for p in [first, second] {
            sub.send(Packet::PubRec(ack(p.packet_id))).await;
            assert_eq!(sub.recv().await, Packet::PubRel(ack(p.packet_id)));
            sub.send(Packet::PubComp(ack(p.packet_id))).await;
        }
        sub.expect_silence(Duration::from_millis(200)).await;
        p.send(Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS))).await;
        sub.send(Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS))).await;
    }
}

#[tokio::test]
async fn unacknowledged_outbound_is_resent_with_dup_and_pubrel_after_reconnect() {
    let t = start(open_config()).await;
    for version in BOTH {
        let mut sub = Raw::ok(t.addr, version, ConnectOpts::new("slow").persistent(60)).await;
        sub.subscribe(1, "r/#", QoS::ExactlyOnce).await;
        let mut p = Raw::ok(t.addr, V5, ConnectOpts::new("p")).await;
        p.publish("r/1", b"one", QoS::AtLeastOnce, 1, false).await;
        assert!(matches!(p.recv().await, Packet::PubAck(_)));
        p.publish("r/2", b"two", QoS::ExactlyOnce, 2, false).await;
        assert!(matches!(p.recv().await, Packet::PubRec(_)));
        p.send(Packet::PubRel(ack(2))).await;
        assert!(matches!(p.recv().await, Packet::PubComp(_)));
        let one = sub.recv_publish().await;
        let two = sub.recv_publish().await;
        assert_eq!((one.qos, two.qos), (QoS::AtLeastOnce, QoS::ExactlyOnce));
        sub.send(Packet::PubRec(ack(two.packet_id))).await; // QoS 2 half done
        assert_eq!(sub.recv().await, Packet::PubRel(ack(two.packet_id)));
        drop(sub);
        // Offline: this one is queued.
        p.publish("r/3", b"three", QoS::AtLeastOnce, 3, false).await;
        assert!(matches!(p.recv().await, Packet::PubAck(_)));

        let (mut sub, connack) = Raw::connect(t.addr, version, ConnectOpts::new("slow").persistent(60)).await;
        assert!(connack.session_present);
        let mut rest = Vec::new();
        for _ in 0..3 {
            rest.push(sub.recv().await);
        }
        let mut resent = publish("r/1", b"one", QoS::AtLeastOnce, one.packet_id, false);
        resent.dup = true;
        assert!(rest.contains(&Packet::Publish(resent)), "{rest:?}");
        assert!(rest.contains(&Packet::PubRel(ack(two.packet_id))), "{rest:?}");
        assert!(rest.iter().any(|p| matches!(p, Packet::Publish(x) if &x.payload[..] == b"three" && !x.dup)), "{rest:?}");
        sub.send(Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS))).await;
        let _ = Raw::ok(t.addr, version, ConnectOpts::new("slow")).await; // clean up the session
    }
}

#[tokio::test]
async fn acl_denials_answer_per_protocol_and_are_counted() {
    let t = start(BrokerConfig::default()).await;
    let mut admin = Raw::ok(t.addr, V5, ConnectOpts::new("admin").user("admin", "secret")).await;
    admin.subscribe(1, "#", QoS::AtLeastOnce).await;
    for version in BOTH {
        let mut dev = Raw::ok(t.addr, version, ConnectOpts::new("dev1").user("dev1", "pw1")).await;
        let suback = dev.subscribe(1, "devices/dev2/#", QoS::AtLeastOnce).await;
        let want = if version == V5 { ReasonCode::NOT_AUTHORIZED } else { ReasonCode(0x80) };
        assert_eq!(suback.reasons, vec![want]);
        let suback = dev.subscribe(2, "devices/+/commands/#", QoS::AtLeastOnce).await;
        assert_eq!(suback.reasons, vec![want]);
        let suback = dev.subscribe(3, "devices/child1/commands/#", QoS::AtLeastOnce).await;
        assert_eq!(suback.reasons, vec![ReasonCode::GRANTED_QOS_1]);
        dev.publish("devices/dev2/commands/x", b"no", QoS::AtLeastOnce, 5, false).await;
        let puback = match dev.recv().await {
            Packet::PubAck(a) => a,
            other => panic!("{other:?}"),
        };
        // 3.1.1 has no negative PUBACK: acknowledged and dropped.
        let want = if version == V5 { ReasonCode::NOT_AUTHORIZED } else { ReasonCode::SUCCESS };
        assert_eq!(puback.reason, want);
        dev.publish("elsewhere", b"no", QoS::AtMostOnce, 0, false).await;
        admin.expect_silence(Duration::from_millis(300)).await;
    }
    let mut viewer = Raw::ok(t.addr, V5, ConnectOpts::new("viewer").user("viewer", "secret")).await;
    viewer.publish("devices/dev1/commands/reboot", b"{}", QoS::AtLeastOnce, 1, false).await;
    assert_eq!(viewer.recv().await, Packet::PubAck(PubAck::new(1, ReasonCode::NOT_AUTHORIZED)));
    let m = t.broker.metrics();
    assert_eq!(m.denied_subscribe, 4);
    assert_eq!(m.denied_publish, 5);
}

#[tokio::test]
async fn platform_publishes_go_through_the_hook_and_are_acked_in_order() {
    let t = start(BrokerConfig::default()).await;
    let mut admin = Raw::ok(t.addr, V5, ConnectOpts::new("admin").user("admin", "secret")).await;
    admin.subscribe(1, "devices/+/telemetry/#", QoS::AtLeastOnce).await;
    for version in BOTH {
        t.hooks.fail_with.store(0, Ordering::SeqCst);
        let mut dev = Raw::ok(t.addr, version, ConnectOpts::new("dev1").user("dev1", "pw1")).await;
        // Pipelined: three QoS 1 telemetry messages, acked in order after the hook.
        for i in 1..=3u16 {
            dev.publish("devices/dev1/telemetry", format!("{{\"n\":{i}}}").as_bytes(), QoS::AtLeastOnce, i, false).await;
        }
        for i in 1..=3u16 {
            assert_eq!(dev.recv().await, Packet::PubAck(ack(i)));
        }
        for i in 1..=3 {
            let p = admin.recv_publish().await;
            assert_eq!(p.payload, Bytes::from(format!("{{\"n\":{i}}}")));
            admin.send(Packet::PubAck(ack(p.packet_id))).await;
        }
        // A gateway speaks for its child.
        dev.publish("devices/child1/telemetry/power", b"{}", QoS::AtMostOnce, 0, false).await;
        assert_eq!(&*admin.recv_publish().await.topic, "devices/child1/telemetry/power");

        t.hooks.fail_with.store(0x99, Ordering::SeqCst);
        dev.publish("devices/dev1/telemetry", b"not json", QoS::AtLeastOnce, 9, false).await;
        match version {
            V5 => assert_eq!(dev.recv().await, Packet::PubAck(PubAck::new(9, ReasonCode::PAYLOAD_FORMAT_INVALID))),
            V3 => assert!(dev.expect_closed().await.is_empty(), "3.1.1: closed without PUBACK"),
        }
        admin.expect_silence(Duration::from_millis(200)).await;
    }
    let topics = t.hooks.platform_topics();
    assert_eq!(topics.iter().filter(|t| *t == "devices/dev1/telemetry").count(), 6);
    assert_eq!(t.broker.metrics().platform_publish_refused, 2);
}

/// QoS 0/1 platform publishes reach subscribers without waiting for their (slow) write; the
/// PUBACK still waits for it. QoS 2 is routed only after the write, so a resend after a crash
/// cannot deliver it twice. A write that fails after routing is refused in the PUBACK (v5).
#[tokio::test]
async fn platform_writes_hold_acks_and_qos2_routing_but_not_qos1_routing() {
    let t = start(BrokerConfig::default()).await;
    t.hooks.write_ms.store(400, Ordering::SeqCst);
    let mut admin = Raw::ok(t.addr, V5, ConnectOpts::new("admin").user("admin", "secret")).await;
    admin.subscribe(1, "devices/dev1/telemetry", QoS::ExactlyOnce).await;
    let mut dev = Raw::ok(t.addr, V5, ConnectOpts::new("dev1").user("dev1", "pw1")).await;

    dev.publish("devices/dev1/telemetry", b"{\"n\":1}", QoS::AtLeastOnce, 1, false).await;
    let Some(Packet::Publish(routed)) = admin.recv_within(Duration::from_millis(200)).await else {
        panic!("QoS 1 not routed before its write finished");
    };
    assert_eq!(&routed.payload[..], b"{\"n\":1}");
    assert_eq!(dev.recv_within(Duration::from_millis(100)).await, None, "PUBACK before the write");
    assert_eq!(dev.recv().await, Packet::PubAck(ack(1)));
    admin.send(Packet::PubAck(ack(routed.packet_id))).await;

    dev.publish("devices/dev1/telemetry", b"{\"n\":2}", QoS::ExactlyOnce, 2, false).await;
    assert_eq!(admin.recv_within(Duration::from_millis(200)).await, None, "QoS 2 routed before its write");
    assert_eq!(dev.recv().await, Packet::PubRec(ack(2)));
    assert_eq!(&admin.recv_publish().await.payload[..], b"{\"n\":2}");

    t.hooks.write_fails_with.store(0x97, Ordering::SeqCst);
    dev.publish("devices/dev1/telemetry", b"{\"n\":3}", QoS::AtLeastOnce, 3, false).await;
    assert_eq!(dev.recv().await, Packet::PubAck(PubAck::new(3, ReasonCode::QUOTA_EXCEEDED)));
    assert_eq!(t.hooks.platform_topics().len(), 2, "the failed write stored nothing");
}

#[tokio::test]
async fn tenant_scoped_application_receives_only_its_tenant() {
    let t = start(BrokerConfig::default()).await;
    let mut app = Raw::ok(t.addr, V5, ConnectOpts::new("acme-app").user("acme-app", "secret")).await;
    app.subscribe(1, "devices/+/telemetry", QoS::AtMostOnce).await;
    let mut d1 = Raw::ok(t.addr, V3, ConnectOpts::new("dev1").user("dev1", "pw1")).await;
    let mut d2 = Raw::ok(t.addr, V3, ConnectOpts::new("dev2").user("dev2", "pw2")).await;
    d2.publish("devices/dev2/telemetry", b"beta", QoS::AtMostOnce, 0, false).await;
    d1.publish("devices/dev1/telemetry", b"acme", QoS::AtMostOnce, 0, false).await;
    assert_eq!(&app.recv_publish().await.payload[..], b"acme");
    app.expect_silence(Duration::from_millis(300)).await;
    // A tenant-scoped operator may command its own tenant's devices only.
    app.publish("devices/dev2/commands/x", b"", QoS::AtLeastOnce, 1, false).await;
    assert_eq!(app.recv().await, Packet::PubAck(PubAck::new(1, ReasonCode::NOT_AUTHORIZED)));
    app.publish("devices/dev1/commands/x", b"", QoS::AtLeastOnce, 2, false).await;
    assert_eq!(app.recv().await, Packet::PubAck(ack(2)));
}

#[tokio::test]
async fn connect_refusals_map_to_each_protocols_codes() {
    let t = start(BrokerConfig::default()).await;
    for (user, pass, v5, v3) in
        [("dev1", "wrong", ReasonCode::BAD_USER_NAME_OR_PASSWORD, 4u8), ("banned", "x", ReasonCode::NOT_AUTHORIZED, 5)]
    {
        let (_, c) = Raw::connect(t.addr, V5, ConnectOpts::new("x").user(user, pass)).await;
        assert_eq!(c.reason, v5);
        let (_, c) = Raw::connect(t.addr, V3, ConnectOpts::new("x").user(user, pass)).await;
        assert_eq!(c.reason.to_v3_connack(), v3);
    }
    // No credentials and no open mode: authenticate refuses.
    let (_, c) = Raw::connect(t.addr, V5, ConnectOpts::new("x")).await;
    assert_eq!(c.reason, ReasonCode::NOT_AUTHORIZED);
    // Enhanced authentication is not supported.
    let mut opts = ConnectOpts::new("x").user("dev1", "pw1");
    opts.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (_, c) = Raw::connect(t.addr, V5, opts).await;
    assert_eq!(c.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    // Empty client id: 3.1.1 only with clean session; v5 gets one assigned.
    let mut opts = ConnectOpts::new("").user("admin", "secret");
    opts.clean_start = false;
    let (_, c) = Raw::connect(t.addr, V3, opts).await;
    assert_eq!(c.reason.to_v3_connack(), 2);
    let _ok = Raw::ok(t.addr, V3, ConnectOpts::new("").user("admin", "secret")).await;
    let (_, c) = Raw::connect(t.addr, V5, ConnectOpts::new("").user("admin", "secret")).await;
    assert_eq!(c.reason, ReasonCode::SUCCESS);
    assert!(c.properties.assigned_client_identifier.is_some_and(|id| !id.is_empty()));
    assert_eq!(c.properties.receive_maximum, Some(128));
    assert!(t.broker.metrics().connects_refused >= 7);
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_with_max_qos_and_all_identifiers() {
    let t = start(open_config()).await;
    let mut c = Raw::ok(t.addr, V5, ConnectOpts::new("c")).await;
    let opts = |qos| SubscriptionOptions { qos, ..Default::default() };
    c.subscribe_with(1, "o/+", opts(QoS::AtMostOnce), Some(1)).await;
    c.subscribe_with(2, "o/#", opts(QoS::AtLeastOnce), Some(2)).await;
    let mut p = Raw::ok(t.addr, V3, ConnectOpts::new("p")).await;
    p.publish("o/x", b"m", QoS::ExactlyOnce, 1, false).await;
    let got = c.recv_publish().await;
    assert_eq!(got.qos, QoS::AtLeastOnce);
    let mut ids = got.properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
    c.send(Packet::PubAck(ack(got.packet_id))).await;
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn no_local_retain_as_published_and_v5_properties_are_honoured() {
    let t = start(open_config()).await;
    let mut c = Raw::ok(t.addr, V5, ConnectOpts::new("c")).await;
    let no_local = SubscriptionOptions { qos: QoS::AtMostOnce, no_local: true, ..Default::default() };
    c.subscribe_with(1, "nl/#", no_local, None).await;
    let rap = SubscriptionOptions { qos: QoS::AtMostOnce, retain_as_published: true, ..Default::default() };
    let mut watcher = Raw::ok(t.addr, V5, ConnectOpts::new("w")).await;
    watcher.subscribe_with(1, "nl/#", rap, None).await;
    let mut own = publish("nl/x", b"mine", QoS::AtMostOnce, 0, true);
    own.properties = Properties {
        content_type: Some("text/plain".into()),
        response_topic: Some("nl/reply".into()),
        correlation_data: Some(Bytes::from_static(b"42")),
        payload_format_indicator: Some(1),
        user_properties: vec![("k".into(), "v".into())],
        ..Properties::default()
    };
    c.send(Packet::Publish(own.clone())).await;
    c.expect_silence(Duration::from_millis(300)).await;
    let got = watcher.recv_publish().await;
    assert!(got.retain, "retain as published");
    assert_eq!(got.properties, own.properties, "properties forwarded unaltered");
}

#[tokio::test]
async fn retained_messages_set_replace_delete_and_honour_retain_handling() {
    let t = start(open_config()).await;
    for version in BOTH {
        let mut p = Raw::ok(t.addr, version, ConnectOpts::new("p")).await;
        p.publish("ret/a", b"old", QoS::AtLeastOnce, 1, true).await;
        p.recv().await;
        p.publish("ret/a", b"new", QoS::AtLeastOnce, 2, true).await;
        p.recv().await;
        p.publish("ret/b", b"b", QoS::AtMostOnce, 0, true).await;
        let mut s = Raw::ok(t.addr, version, ConnectOpts::new("s")).await;
        s.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![("ret/#".into(), SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() })],
        }))
        .await;
        assert!(matches!(s.recv().await, Packet::SubAck(_)), "SUBACK before retained messages");
        let mut got: Vec<(String, Vec<u8>, bool)> = Vec::new();
        for _ in 0..2 {
            let m = s.recv_publish().await;
            if m.qos != QoS::AtMostOnce {
                s.send(Packet::PubAck(ack(m.packet_id))).await;
            }
            got.push((m.topic.to_string(), m.payload.to_vec(), m.retain));
        }
        got.sort();
        assert_eq!(got, vec![("ret/a".into(), b"new".to_vec(), true), ("ret/b".into(), b"b".to_vec(), true)]);
        // Live messages to an existing subscription carry retain=0.
        p.publish("ret/b", b"b2", QoS::AtMostOnce, 0, true).await;
        assert!(!s.recv_publish().await.retain);
        p.publish("ret/a", b"", QoS::AtMostOnce, 0, true).await;
        p.publish("ret/b", b"", QoS::AtMostOnce, 0, true).await;
        s.recv_publish().await;
        s.recv_publish().await;
        let mut s2 = Raw::ok(t.addr, version, ConnectOpts::new("s2")).await;
        s2.subscribe(1, "ret/#", QoS::AtMostOnce).await;
        s2.expect_silence(Duration::from_millis(300)).await;
    }
    let mut p = Raw::ok(t.addr, V5, ConnectOpts::new("p")).await;
    p.publish("rh/x", b"r", QoS::AtMostOnce, 0, true).await;
    let mut s = Raw::ok(t.addr, V5, ConnectOpts::new("rh")).await;
    let dont = SubscriptionOptions { retain_handling: RetainHandling::DoNotSend, ..Default::default() };
    s.subscribe_with(1, "rh/#", dont, None).await;
    s.expect_silence(Duration::from_millis(300)).await;
    let if_new = SubscriptionOptions { retain_handling: RetainHandling::SendIfNew, ..Default::default() };
    s.subscribe_with(2, "rh/#", if_new, None).await;
    s.expect_silence(Duration::from_millis(300)).await; // existed already
    s.subscribe_with(3, "rh/+", if_new, None).await;
    assert_eq!(&*s.recv_publish().await.topic, "rh/x");
    assert_eq!(t.broker.metrics().retained_messages, 1);
}

#[tokio::test]
async fn message_expiry_is_decremented_and_expired_messages_are_dropped() {
    let t = start(open_config()).await;
    let mut p = Raw::ok(t.addr, V5, ConnectOpts::new("p")).await;
    let mut m = publish("exp/x", b"short-lived", QoS::AtMostOnce, 0, true);
    m.properties.message_expiry_interval = Some(2);
    p.send(Packet::Publish(m)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut s = Raw::ok(t.addr, V5, ConnectOpts::new("s")).await;
    s.subscribe(1, "exp/#", QoS::AtMostOnce).await;
    let got = s.recv_publish().await;
    assert_eq!(got.properties.message_expiry_interval, Some(1), "decremented");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut s2 = Raw::ok(t.addr, V5, ConnectOpts::new("s2")).await;
    s2.subscribe(1, "exp/#", QoS::AtMostOnce).await;
    s2.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn messages_above_the_clients_maximum_packet_size_are_not_sent() {
    let t = start(open_config()).await;
    let mut opts = ConnectOpts::new("small");
    opts.properties.maximum_packet_size = Some(100);
    let mut s = Raw::ok(t.addr, V5, opts).await;
    s.subscribe(1, "big/#", QoS::AtLeastOnce).await;
    let mut p = Raw::ok(t.addr, V3, ConnectOpts::new("p")).await;
    p.publish("big/x", &[1u8; 200], QoS::AtLeastOnce, 1, false).await;
    p.publish("big/x", b"fits", QoS::AtLeastOnce, 2, false).await;
    assert_eq!(&s.recv_publish().await.payload[..], b"fits");
    assert_eq!(t.broker.metrics().dropped_too_large, 1);
}

#[tokio::test]
async fn platform_can_kick_devices_publish_and_shut_down() {
    let t = start(BrokerConfig::default()).await;
    let mut dev = Raw::ok(t.addr, V5, ConnectOpts::new("dev1").user("dev1", "pw1")).await;
    dev.subscribe(1, "devices/dev1/commands/#", QoS::AtLeastOnce).await;
    t.broker
        .publish_from_platform("devices/dev1/commands/reboot", Bytes::from_static(b"{}"), QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let cmd = dev.recv_publish().await;
    assert_eq!(&*cmd.topic, "devices/dev1/commands/reboot");
    dev.send(Packet::PubAck(ack(cmd.packet_id))).await;
    assert_eq!(t.broker.kick_device("dev1", ReasonCode::ADMINISTRATIVE_ACTION), 1);
    assert_eq!(disconnect_reason(&dev.expect_closed().await), Some(ReasonCode::ADMINISTRATIVE_ACTION));

    let mut v5 = Raw::ok(t.addr, V5, ConnectOpts::new("admin").user("admin", "secret")).await;
    let mut v3 = Raw::ok(t.addr, V3, ConnectOpts::new("dev2").user("dev2", "pw2")).await;
    t.broker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(disconnect_reason(&v5.expect_closed().await), Some(ReasonCode::SERVER_SHUTTING_DOWN));
    assert!(v3.expect_closed().await.is_empty());
    let events = t.hooks.events.lock().unwrap().clone();
    assert!(events.contains(&"disconnected dev1 Kicked".to_string()), "{events:?}");
}

#[tokio::test]
async fn rate_limit_throttles_a_fast_publisher() {
    let limit = RateLimit { messages_per_second: 20, burst: 5 };
    let t = start(BrokerConfig { publish_rate_limit: Some(limit), ..open_config() }).await;
    let mut p = Raw::ok(t.addr, V5, ConnectOpts::new("fast")).await;
    let started = Instant::now();
    for i in 1..=25u16 {
        p.publish("rl/x", b"x", QoS::AtLeastOnce, i, false).await;
    }
    for _ in 1..=25 {
        assert!(matches!(p.recv().await, Packet::PubAck(_)));
    }
    // 5 free, 20 more at 20/s: about a second.
    assert!(started.elapsed() >= Duration::from_millis(800), "{:?}", started.elapsed());
    assert!(t.broker.metrics().publishes_throttled > 0);
}

#[tokio::test]
async fn slow_subscriber_backlog_is_bounded() {
    let config = BrokerConfig { max_qos0_backlog: 10, max_queued_messages: 20, ..open_config() };
    let t = start(config).await;
    // Subscribes with a 1-message window and never acknowledges.
    let mut opts = ConnectOpts::new("slow").persistent(60);
    opts.properties.receive_maximum = Some(1);
    let mut slow = Raw::ok(t.addr, V5, opts).await;
    slow.subscribe(1, "flood/#", QoS::AtLeastOnce).await;
    let mut p = Raw::ok(t.addr, V3, ConnectOpts::new("p")).await;
    for i in 1..=50u16 {
        p.publish("flood/x", b"x", QoS::AtLeastOnce, i, false).await;
        assert!(matches!(p.recv().await, Packet::PubAck(_)));
    }
    assert_eq!(slow.recv_publish().await.packet_id, 1);
    slow.expect_silence(Duration::from_millis(200)).await; // window of one
    let m = t.broker.metrics();
    assert_eq!(m.dropped_queue_full, 50 - 1 - 20);
    let _ = Arc::new(());
}

/// Regression: a 3.1.1 client cannot know the Receive Maximum, so one that pipelines more QoS 1
/// publishes than that while the platform is still making them durable must be slowed down (the
/// broker stops reading), not disconnected for a limit it was never told.
#[tokio::test]
async fn v311_publisher_beyond_the_receive_maximum_is_slowed_not_disconnected() {
    let t = start(BrokerConfig { receive_maximum: 8, ..BrokerConfig::default() }).await;
    let mut dev = Raw::ok(t.addr, V3, ConnectOpts::new("dev1").user("dev1", "pw1")).await;
    let count = 40u16;
    let mut bytes = bytes::BytesMut::new();
    for i in 1..=count {
        let packet =
            Packet::Publish(publish("devices/dev1/telemetry", format!("{{\"n\":{i}}}").as_bytes(), QoS::AtLeastOnce, i, false));
        encode_packet(&packet, V3, &mut bytes);
    }
    dev.send_bytes(&bytes).await; // all at once: 5x the limit waiting on a 2 ms "fsync" each
    for i in 1..=count {
        assert_eq!(dev.recv().await, Packet::PubAck(ack(i)), "ack {i}");
    }
    assert_eq!(t.hooks.platform_topics().len(), usize::from(count));
    // An MQTT 5 client was told the limit; exceeding it is a protocol error (0x93).
    let mut dev5 = Raw::ok(t.addr, V5, ConnectOpts::new("dev1").user("dev1", "pw1")).await;
    let mut bytes = bytes::BytesMut::new();
    for i in 1..=count {
        let packet = Packet::Publish(publish("devices/dev1/telemetry", b"{}", QoS::AtLeastOnce, i, false));
        encode_packet(&packet, V5, &mut bytes);
    }
    dev5.send_bytes(&bytes).await;
    let closing = dev5.expect_closed().await;
    assert!(
        closing.iter().any(|p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)),
        "{closing:?}"
    );
}
