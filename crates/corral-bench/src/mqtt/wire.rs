//! MQTT 3.1.1 bytes for the load generator. The rare packets (CONNECT, SUBSCRIBE) are encoded with
//! Corral's own codec; the hot ones are written and read as raw bytes into reused buffers, so a
//! publish costs no allocation: [`put_publish`] appends one PUBLISH, [`put_puback`] one PUBACK, and
//! [`frames`] walks the complete packets at the front of a receive buffer.

use bytes::{Bytes, BytesMut};
use corral_mqtt::codec::{Connect, Packet, Properties, ProtocolVersion, QoS, Subscribe, SubscriptionOptions, encode_packet};

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBACK: u8 = 9;

/// CONNECT (3.1.1, clean session, keep-alive off so idle connections stay silent).
pub fn connect(client_id: &str, username: Option<&str>, password: Option<&str>) -> BytesMut {
    let packet = Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V311,
        client_id: client_id.to_string(),
        clean_start: true,
        keep_alive_secs: 0,
        properties: Properties::default(),
        will: None,
        username: username.map(str::to_string),
        password: password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
    }));
    let mut out = BytesMut::new();
    encode_packet(&packet, ProtocolVersion::V311, &mut out);
    out
}

/// SUBSCRIBE to one filter.
pub fn subscribe(packet_id: u16, filter: &str, qos: u8) -> BytesMut {
    let options = SubscriptionOptions { qos: QoS::from_u8(qos).unwrap_or_default(), ..Default::default() };
    let packet = Packet::Subscribe(Subscribe {
        packet_id,
        properties: Properties::default(),
        filters: vec![(filter.to_string(), options)],
    });
    let mut out = BytesMut::new();
    encode_packet(&packet, ProtocolVersion::V311, &mut out);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if v == 0 {
            break;
        }
    }
}

/// Appends a PUBLISH (packet id only written for QoS > 0).
pub fn put_publish(out: &mut Vec<u8>, topic: &[u8], qos: u8, packet_id: u16, payload: &[u8]) {
    out.push(0x30 | (qos << 1));
    let id_len = if qos > 0 { 2 } else { 0 };
    put_varint(out, 2 + topic.len() + id_len + payload.len());
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

pub fn put_puback(out: &mut Vec<u8>, packet_id: u16) {
    out.extend_from_slice(&[0x40, 2]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

/// Calls `f(kind, flags, body)` for each complete packet at the front of `buf`; returns the bytes
/// consumed (the rest is an incomplete packet). `Err` on a malformed length.
pub fn frames(buf: &[u8], mut f: impl FnMut(u8, u8, &[u8])) -> Result<usize, &'static str> {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            return Ok(at);
        }
        let (mut len, mut shift, mut i) = (0usize, 0u32, 1usize);
        loop {
            let Some(&b) = rest.get(i) else { return Ok(at) };
            len |= ((b & 0x7F) as usize) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return Err("malformed remaining length");
            }
        }
        if rest.len() < i + len {
            return Ok(at);
        }
        f(rest[0] >> 4, rest[0] & 0x0F, &rest[i..i + len]);
        at += i + len;
    }
}

/// A received PUBLISH body split up: (topic, packet id or 0, payload).
pub fn publish_parts(flags: u8, body: &[u8]) -> Option<(&[u8], u16, &[u8])> {
    let topic_len = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let topic = body.get(2..2 + topic_len)?;
    let mut at = 2 + topic_len;
    let mut packet_id = 0;
    if (flags >> 1) & 3 > 0 {
        packet_id = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
        at += 2;
    }
    Some((topic, packet_id, body.get(at..)?))
}

/// The packet id of a PUBACK/SUBACK body.
pub fn packet_id(body: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*body.first()?, *body.get(1)?]))
}

/// Appends `v` in decimal without allocating.
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        v /= 10;
        n += 1;
        if v == 0 {
            break;
        }
    }
    out.extend(digits[..n].iter().rev());
}

/// The number after `key` in a JSON payload such as `{"temperature":21.5,"sent_ns":123}`.
pub fn find_u64(payload: &[u8], key: &[u8]) -> Option<u64> {
    let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut v: u64 = 0;
    let mut any = false;
    for d in digits {
        v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
        any = true;
    }
    any.then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_mqtt::codec::decode_packet;

    fn decode(bytes: &[u8]) -> Packet {
        let mut buf = BytesMut::from(bytes);
        decode_packet(&mut buf, ProtocolVersion::V311, 1 << 20).unwrap().unwrap()
    }

    #[test]
    fn publish_round_trips_through_the_codec() {
        for (qos, id) in [(0u8, 0u16), (1, 513)] {
            let mut out = Vec::new();
            put_publish(&mut out, b"devices/d1/telemetry", qos, id, br#"{"temperature":21.5}"#);
            let Packet::Publish(p) = decode(&out) else { panic!("not a publish") };
            assert_eq!((&*p.topic, p.qos as u8, p.packet_id), ("devices/d1/telemetry", qos, id));
            assert_eq!(&p.payload[..], br#"{"temperature":21.5}"#);
            let mut seen = 0;
            assert_eq!(
                frames(&out, |kind, flags, body| {
                    assert_eq!(kind, PUBLISH);
                    let (topic, pid, payload) = publish_parts(flags, body).unwrap();
                    assert_eq!((topic, pid, payload), (&b"devices/d1/telemetry"[..], id, &br#"{"temperature":21.5}"#[..]));
                    seen += 1;
                }),
                Ok(out.len())
            );
            assert_eq!(seen, 1);
        }
    }

    #[test]
    fn long_payload_uses_a_multi_byte_length() {
        let payload = vec![b'x'; 300];
        let mut out = Vec::new();
        put_publish(&mut out, b"t", 0, 0, &payload);
        assert_eq!(&out[1..3], &[0xAF, 0x02]); // 2 + 1 + 300 = 303
        let Packet::Publish(p) = decode(&out) else { panic!() };
        assert_eq!(p.payload.len(), 300);
    }

    #[test]
    fn frames_stop_at_an_incomplete_packet() {
        let mut out = Vec::new();
        put_puback(&mut out, 7);
        put_publish(&mut out, b"a/b", 1, 9, b"hello");
        let full = out.len();
        for cut in 0..full {
            let mut ids = Vec::new();
            let used = frames(&out[..cut], |kind, flags, body| match kind {
                PUBACK => ids.push(packet_id(body).unwrap()),
                PUBLISH => ids.push(publish_parts(flags, body).unwrap().1),
                _ => panic!(),
            })
            .unwrap();
            let expect: &[u16] = if cut < 4 { &[] } else { &[7] };
            assert_eq!(ids, expect, "cut {cut}");
            assert_eq!(used, if cut < 4 { 0 } else { 4 });
        }
        assert_eq!(frames(&out, |_, _, _| {}), Ok(full));
        assert!(frames(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], |_, _, _| {}).is_err());
    }

    #[test]
    fn connect_and_subscribe_decode() {
        let Packet::Connect(c) = decode(&connect("d1", Some("d1"), Some("tok"))) else { panic!() };
        assert_eq!((c.client_id.as_str(), c.username.as_deref(), c.keep_alive_secs), ("d1", Some("d1"), 0));
        let Packet::Subscribe(s) = decode(&subscribe(3, "devices/+/telemetry", 1)) else { panic!() };
        assert_eq!(s.filters[0].0, "devices/+/telemetry");
        assert_eq!(s.filters[0].1.qos, QoS::AtLeastOnce);
    }

    #[test]
    fn numbers_in_payloads() {
        let mut out = b"{\"sent_ns\":".to_vec();
        put_u64(&mut out, 1234567890123);
        out.push(b'}');
        assert_eq!(find_u64(&out, b"\"sent_ns\":"), Some(1234567890123));
        let mut zero = Vec::new();
        put_u64(&mut zero, 0);
        assert_eq!(zero, b"0");
        assert_eq!(find_u64(b"{\"x\":1}", b"\"sent_ns\":"), None);
    }
}
