//! Round trips of every packet under both protocol versions, and malformed inputs.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::error::DecodeError;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const MAX: usize = 1024 * 1024;

fn round_trip(packet: Packet, version: ProtocolVersion) {
    let mut buf = BytesMut::new();
    let n = encode_packet(&packet, version, &mut buf);
    assert_eq!(n, buf.len());
    assert_eq!(n, packet_len(&packet, version));
    // Fed one byte at a time: "need more" until the last byte, never an error.
    let full = buf.clone();
    let mut partial = BytesMut::new();
    for (i, b) in full.iter().enumerate() {
        partial.extend_from_slice(&[*b]);
        let got = decode_packet(&mut partial, version, MAX).unwrap_or_else(|e| panic!("{packet:?} byte {i}: {e}"));
        if i + 1 < full.len() {
            assert!(got.is_none(), "complete too early at byte {i}");
        } else {
            assert_eq!(got.as_ref(), Some(&packet), "{version:?}");
            assert!(partial.is_empty());
        }
    }
}

fn props_v5() -> Properties {
    Properties { reason_string: Some("why".into()), user_properties: vec![("a".into(), "b".into())], ..Properties::default() }
}

fn sample_packets(version: ProtocolVersion) -> Vec<Packet> {
    let v5 = version == V5;
    let p = |props: Properties| if v5 { props } else { Properties::default() };
    let reason = |r: ReasonCode| if v5 { r } else { ReasonCode::SUCCESS };
    vec![
        Packet::Connect(Box::new(Connect {
            version,
            client_id: "dev-1".into(),
            clean_start: true,
            keep_alive_secs: 30,
            properties: p(Properties {
                session_expiry_interval: Some(3600),
                receive_maximum: Some(10),
                maximum_packet_size: Some(4096),
                topic_alias_maximum: Some(5),
                request_problem_information: Some(0),
                user_properties: vec![("k".into(), "v".into())],
                ..Properties::default()
            }),
            will: Some(LastWill {
                topic: "devices/dev-1/status".into(),
                payload: Bytes::from_static(b"offline"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: p(Properties {
                    will_delay_interval: Some(5),
                    content_type: Some("text/plain".into()),
                    ..Properties::default()
                }),
            }),
            username: Some("dev-1".into()),
            password: Some(Bytes::from_static(b"token")),
        })),
        Packet::Connect(Box::new(Connect {
            version,
            client_id: String::new(),
            clean_start: true,
            keep_alive_secs: 0,
            properties: Properties::default(),
            will: None,
            username: None,
            password: None,
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ReasonCode::SUCCESS,
            properties: p(Properties {
                assigned_client_identifier: Some("auto-1".into()),
                receive_maximum: Some(128),
                server_keep_alive: Some(60),
                topic_alias_maximum: Some(64),
                maximum_qos: Some(1),
                retain_available: Some(1),
                wildcard_subscription_available: Some(1),
                subscription_identifier_available: Some(1),
                shared_subscription_available: Some(1),
                ..Properties::default()
            }),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::NOT_AUTHORIZED,
            properties: Properties::default(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: Arc::from("a/b"),
            packet_id: 0,
            properties: Properties::default(),
            payload: Bytes::from_static(b"hello"),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: Arc::from("a/b/c"),
            packet_id: 65535,
            properties: p(Properties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(10),
                topic_alias: Some(2),
                response_topic: Some("r/t".into()),
                correlation_data: Some(Bytes::from_static(b"\0\x01")),
                content_type: Some("application/json".into()),
                user_properties: vec![("x".into(), "y".into())],
                ..Properties::default()
            }),
            payload: Bytes::new(),
        }),
        Packet::PubAck(PubAck::new(1, ReasonCode::SUCCESS)),
        Packet::PubAck(PubAck { packet_id: 2, reason: reason(ReasonCode::NOT_AUTHORIZED), properties: p(props_v5()) }),
        Packet::PubRec(PubAck::new(3, reason(ReasonCode::NO_MATCHING_SUBSCRIBERS))),
        Packet::PubRel(PubAck::new(4, ReasonCode::SUCCESS)),
        Packet::PubRel(PubAck::new(5, reason(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND))),
        Packet::PubComp(PubAck { packet_id: 6, reason: ReasonCode::SUCCESS, properties: p(props_v5()) }),
        Packet::Subscribe(Subscribe {
            packet_id: 7,
            properties: p(Properties { subscription_identifiers: vec![42], ..Properties::default() }),
            filters: vec![
                ("a/+/c".into(), SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() }),
                ("$share/g/x/#".into(), SubscriptionOptions { qos: QoS::ExactlyOnce, ..Default::default() }),
                (
                    "z".into(),
                    if v5 {
                        SubscriptionOptions {
                            qos: QoS::AtMostOnce,
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: RetainHandling::DoNotSend,
                        }
                    } else {
                        SubscriptionOptions::default()
                    },
                ),
            ],
        }),
        Packet::SubAck(SubAck {
            packet_id: 7,
            properties: p(props_v5()),
            reasons: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::GRANTED_QOS_2, ReasonCode(0x80)],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 8,
            properties: p(Properties { user_properties: vec![("u".into(), "p".into())], ..Properties::default() }),
            filters: vec!["a/#".into(), "b".into()],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 8,
            properties: p(props_v5()),
            reasons: if v5 { vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED] } else { vec![] },
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION)),
        Packet::Disconnect(Disconnect {
            reason: reason(ReasonCode::SESSION_TAKEN_OVER),
            properties: p(Properties {
                session_expiry_interval: Some(0),
                server_reference: Some("elsewhere".into()),
                ..props_v5()
            }),
        }),
    ]
}

#[test]
fn every_packet_round_trips_under_v311() {
    for packet in sample_packets(V3) {
        round_trip(packet, V3);
    }
}

#[test]
fn every_packet_round_trips_under_v5() {
    for packet in sample_packets(V5) {
        round_trip(packet, V5);
    }
    round_trip(Packet::Auth(Auth { reason: ReasonCode::SUCCESS, properties: Properties::default() }), V5);
    round_trip(
        Packet::Auth(Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Properties {
                authentication_method: Some("SCRAM".into()),
                authentication_data: Some(Bytes::from_static(b"x")),
                ..Properties::default()
            },
        }),
        V5,
    );
    // Found by the fuzzer: a reason without properties must still carry the property length
    // (AUTH, unlike DISCONNECT, has no one-byte form), or it does not decode again.
    round_trip(Packet::Auth(Auth { reason: ReasonCode::RE_AUTHENTICATE, properties: Properties::default() }), V5);
    round_trip(Packet::Disconnect(Disconnect::new(ReasonCode::SERVER_BUSY)), V5);
}

#[test]
fn two_packets_in_one_buffer_decode_in_order() {
    let mut buf = BytesMut::new();
    encode_packet(&Packet::PingReq, V5, &mut buf);
    encode_packet(&Packet::PubAck(PubAck::new(9, ReasonCode::SUCCESS)), V5, &mut buf);
    assert_eq!(decode_packet(&mut buf, V5, MAX).unwrap(), Some(Packet::PingReq));
    assert_eq!(decode_packet(&mut buf, V5, MAX).unwrap(), Some(Packet::PubAck(PubAck::new(9, ReasonCode::SUCCESS))));
    assert_eq!(decode_packet(&mut buf, V5, MAX).unwrap(), None);
}

fn decode_err(bytes: &[u8], version: ProtocolVersion) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match decode_packet(&mut buf, version, MAX) {
        Err(e) => e,
        Ok(p) => panic!("{bytes:02x?} decoded as {p:?}"),
    }
}

#[test]
fn malformed_packets_are_rejected_with_the_right_reason() {
    use DecodeError::*;
    // reserved packet type 0, and AUTH under 3.1.1
    assert!(matches!(decode_err(&[0x00, 0x00], V5), Malformed(_)));
    assert!(matches!(decode_err(&[0xF0, 0x00], V3), Malformed(_)));
    // wrong fixed header flags: PUBREL must be 0x62, SUBSCRIBE 0x82, PINGREQ 0xC0
    assert!(matches!(decode_err(&[0x60, 0x02, 0x00, 0x01], V3), Malformed(_)));
    assert!(matches!(decode_err(&[0x80, 0x06, 0, 1, 0, 1, b'a', 0], V3), Malformed(_)));
    assert!(matches!(decode_err(&[0xC1, 0x00], V3), Malformed(_)));
    // PUBLISH QoS 3, DUP on QoS 0, wildcard in topic, empty topic without alias, packet id 0
    assert!(matches!(decode_err(&[0x36, 0x05, 0, 1, b'a', 0, 1], V3), Malformed(_)));
    assert!(matches!(decode_err(&[0x38, 0x03, 0, 1, b'a'], V3), Malformed(_)));
    assert_eq!(decode_err(&[0x30, 0x03, 0, 1, b'+'], V3), TopicNameInvalid);
    assert_eq!(decode_err(&[0x30, 0x03, 0, 0, 0], V5), TopicNameInvalid);
    assert!(matches!(decode_err(&[0x32, 0x05, 0, 1, b'a', 0, 0], V3), Protocol(_)));
    // U+0000 in a topic
    assert!(matches!(decode_err(&[0x30, 0x04, 0, 2, b'a', 0], V3), Malformed(_)));
    // invalid UTF-8 in a topic
    assert!(matches!(decode_err(&[0x30, 0x04, 0, 2, 0xC3, 0x28], V3), Malformed(_)));
    // string length beyond the packet
    assert!(matches!(decode_err(&[0x30, 0x03, 0, 9, b'a'], V3), Malformed(_)));
    // SUBSCRIBE with no filter, bad filter, reserved option bits, QoS 3
    assert!(matches!(decode_err(&[0x82, 0x02, 0, 1], V3), Protocol(_)));
    assert_eq!(decode_err(&[0x82, 0x08, 0, 1, 0, 3, b'#', b'/', b'a', 0], V3), TopicFilterInvalid);
    assert_eq!(decode_err(&[0x82, 0x07, 0, 1, 0, 2, b'a', b'#', 0], V3), TopicFilterInvalid);
    assert!(matches!(decode_err(&[0x82, 0x06, 0, 1, 0, 1, b'a', 0x04], V3), Malformed(_)));
    assert!(matches!(decode_err(&[0x82, 0x06, 0, 1, 0, 1, b'a', 0x03], V3), Malformed(_)));
    // v5 retain handling 3; no-local on a shared subscription
    assert!(matches!(decode_err(&[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x30], V5), Protocol(_)));
    let shared = b"$share/g/a";
    let mut sub = vec![0x82, (6 + shared.len()) as u8, 0, 1, 0, 0, shared.len() as u8];
    sub.extend_from_slice(shared);
    sub.push(0x04);
    assert!(matches!(decode_err(&sub, V5), Protocol(_)));
    // 3.1.1 PUBACK with trailing bytes; DISCONNECT with a body
    assert!(matches!(decode_err(&[0x40, 0x03, 0, 1, 0], V3), Malformed(_)));
    assert!(matches!(decode_err(&[0xE0, 0x01, 0], V3), Malformed(_)));
    // v5 PUBACK with a reason code PUBACK may not carry
    assert!(matches!(decode_err(&[0x40, 0x03, 0, 1, 0x8E], V5), Protocol(_)));
    // remaining length: 5 bytes, non-minimal
    assert!(matches!(decode_err(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V3), Malformed(_)));
    assert!(matches!(decode_err(&[0xC0, 0x80, 0x00], V3), Malformed(_)));
}

#[test]
fn connect_rules() {
    use DecodeError::*;
    let connect = |name: &[u8], level: u8, flags: u8, rest: &[u8]| {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0, 60]);
        body.extend_from_slice(rest);
        let mut out = vec![0x10, body.len() as u8];
        out.extend(body);
        out
    };
    // levels other than 4 and 5 (3 = MQTT 3.1 "MQIsdp"), unknown protocol name
    assert_eq!(decode_err(&connect(b"MQTT", 3, 2, &[0, 0]), V3), UnsupportedProtocolVersion(3));
    assert_eq!(decode_err(&connect(b"MQTT", 6, 2, &[0, 0]), V3), UnsupportedProtocolVersion(6));
    assert_eq!(decode_err(&connect(b"MQIsdp", 3, 2, &[0, 0]), V3), UnsupportedProtocolVersion(3));
    assert!(matches!(decode_err(&connect(b"MQTX", 4, 2, &[0, 0]), V3), Protocol(_)));
    // reserved flag, will QoS without will, will QoS 3, password without user name (3.1.1)
    assert!(matches!(decode_err(&connect(b"MQTT", 4, 3, &[0, 0]), V3), Malformed(_)));
    assert!(matches!(decode_err(&connect(b"MQTT", 4, 0x0A, &[0, 0]), V3), Malformed(_)));
    assert!(matches!(decode_err(&connect(b"MQTT", 4, 0x1E, &[0, 0, 0, 1, b'w', 0, 0]), V3), Malformed(_)));
    assert!(matches!(decode_err(&connect(b"MQTT", 4, 0x42, &[0, 0, 0, 1, b'p']), V3), Malformed(_)));
    // trailing bytes after the payload
    assert!(matches!(decode_err(&connect(b"MQTT", 4, 2, &[0, 0, 9]), V3), Malformed(_)));
    // v5: property not allowed in CONNECT (topic alias)
    assert!(matches!(decode_err(&connect(b"MQTT", 5, 2, &[3, 0x23, 0, 1, 0, 0]), V5), Protocol(_)));
    // the level can be read before the whole CONNECT arrived
    assert_eq!(peek_connect_level(&connect(b"MQTT", 5, 2, &[0, 0, 0])[..9]), Some(5));
}

#[test]
fn oversize_packets_fail_before_their_body_arrives() {
    // Declares 2 MiB; only the header is here.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x01][..]);
    assert_eq!(decode_packet(&mut buf, V5, MAX), Err(DecodeError::TooLarge { size: 5 + 2_097_152, max: MAX }));
    // Incomplete but allowed: reserves at most the declared size.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x01][..]);
    assert_eq!(decode_packet(&mut buf, V5, MAX), Ok(None));
    assert!(buf.capacity() <= 3 + 128 + 64);
}

#[test]
fn publish_payload_is_a_slice_of_the_frame() {
    let mut buf = BytesMut::new();
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: Arc::from("t"),
        packet_id: 0,
        properties: Properties::default(),
        payload: Bytes::from(vec![7u8; 1000]),
    });
    encode_packet(&packet, V3, &mut buf);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode_packet(&mut buf, V3, MAX).unwrap() else { panic!() };
    let at = p.payload.as_ptr() as usize;
    assert!(at > start && at < start + 1010, "payload was copied");
}

/// Writes the seed corpus of the fuzz target from the sample packets:
/// `cargo test -p corral-mqtt -- --ignored regenerate_seed_corpus`.
#[test]
#[ignore]
fn regenerate_seed_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/decode");
    std::fs::create_dir_all(dir).unwrap();
    for (version, name) in [(V3, "v311"), (V5, "v5")] {
        for (i, packet) in sample_packets(version).iter().enumerate() {
            let mut buf = BytesMut::new();
            encode_packet(packet, version, &mut buf);
            let file = format!("{dir}/{name}-{i:02}-{}", packet.kind().to_lowercase());
            std::fs::write(file, &buf).unwrap();
        }
    }
}
