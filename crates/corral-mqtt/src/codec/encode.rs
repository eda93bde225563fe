//! Packet encoding. The body length is computed first (properties know their size), so the
//! fixed header is written once and the packet is appended to the caller's buffer in one pass:
//! many packets to one connection batch into a single write.

use bytes::{BufMut, BytesMut};

use super::packet::*;
use super::properties::Properties;
use super::wire::{put_binary, put_str, put_varint, varint_len};

/// Total encoded size of `packet` (fixed header included), e.g. to honour a peer's maximum
/// packet size before encoding.
pub fn packet_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let body = body_len(packet, is_v5(packet, version));
    1 + varint_len(body as u32) + body
}

/// Appends `packet` to `out`; returns the bytes written.
pub fn encode_packet(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> usize {
    let v5 = is_v5(packet, version);
    let body = body_len(packet, v5);
    let total = 1 + varint_len(body as u32) + body;
    out.reserve(total);
    out.put_u8(first_byte(packet));
    put_varint(out, body as u32);
    write_body(packet, v5, out);
    total
}

/// A CONNECT carries its own protocol level; every other packet follows the connection's.
fn is_v5(packet: &Packet, version: ProtocolVersion) -> bool {
    match packet {
        Packet::Connect(c) => c.version == ProtocolVersion::V5,
        _ => version == ProtocolVersion::V5,
    }
}

fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => 0x30 | (p.dup as u8) << 3 | (p.qos as u8) << 1 | p.retain as u8,
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

fn props_len(p: &Properties, v5: bool) -> usize {
    if v5 { p.block_len() } else { 0 }
}

fn body_len(packet: &Packet, v5: bool) -> usize {
    match packet {
        Packet::Connect(c) => {
            let mut n = 2 + 4 + 1 + 1 + 2 + props_len(&c.properties, v5) + 2 + c.client_id.len();
            if let Some(w) = &c.will {
                n += props_len(&w.properties, v5) + 2 + w.topic.len() + 2 + w.payload.len();
            }
            n += c.username.as_ref().map_or(0, |u| 2 + u.len());
            n += c.password.as_ref().map_or(0, |p| 2 + p.len());
            n
        }
        Packet::ConnAck(c) => 2 + props_len(&c.properties, v5),
        Packet::Publish(p) => {
            2 + p.topic.len() + if p.qos == QoS::AtMostOnce { 0 } else { 2 } + props_len(&p.properties, v5) + p.payload.len()
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => ack_len(a, v5),
        Packet::Subscribe(s) => 2 + props_len(&s.properties, v5) + s.filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>(),
        Packet::SubAck(s) => 2 + props_len(&s.properties, v5) + s.reasons.len(),
        Packet::Unsubscribe(u) => 2 + props_len(&u.properties, v5) + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>(),
        Packet::UnsubAck(u) => 2 + if v5 { u.properties.block_len() + u.reasons.len() } else { 0 },
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => short_reason_len(d.reason.0, &d.properties, v5, false),
        Packet::Auth(a) => short_reason_len(a.reason.0, &a.properties, v5, true),
    }
}

/// DISCONNECT and AUTH may omit reason and properties when they are "success, none". DISCONNECT
/// may also send a bare reason (§3.14.2.2.1); AUTH may not (§3.15.2.1): with a reason, the
/// property length follows even when it is 0.
fn short_reason_len(reason: u8, props: &Properties, v5: bool, props_with_reason: bool) -> usize {
    if !v5 || (reason == 0 && props.is_empty()) {
        0
    } else if props.is_empty() && !props_with_reason {
        1
    } else {
        1 + props.block_len()
    }
}

fn ack_len(a: &PubAck, v5: bool) -> usize {
    if !v5 || (a.reason.0 == 0 && a.properties.is_empty()) {
        2
    } else if a.properties.is_empty() {
        3
    } else {
        3 + a.properties.block_len()
    }
}

fn write_body(packet: &Packet, v5: bool, out: &mut BytesMut) {
    match packet {
        Packet::Connect(c) => connect(c, v5, out),
        Packet::ConnAck(c) => {
            out.put_u8(c.session_present as u8);
            out.put_u8(if v5 { c.reason.0 } else { c.reason.to_v3_connack() });
            if v5 {
                c.properties.encode(out);
            }
        }
        Packet::Publish(p) => {
            put_str(out, &p.topic);
            if p.qos != QoS::AtMostOnce {
                out.put_u16(p.packet_id);
            }
            if v5 {
                p.properties.encode(out);
            }
            out.put_slice(&p.payload);
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            out.put_u16(a.packet_id);
            let len = ack_len(a, v5);
            if len >= 3 {
                out.put_u8(a.reason.0);
            }
            if len > 3 {
                a.properties.encode(out);
            }
        }
        Packet::Subscribe(s) => {
            out.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(out);
            }
            for (filter, options) in &s.filters {
                put_str(out, filter);
                out.put_u8(options.to_byte());
            }
        }
        Packet::SubAck(s) => {
            out.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(out);
            }
            for r in &s.reasons {
                out.put_u8(r.0);
            }
        }
        Packet::Unsubscribe(u) => {
            out.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(out);
            }
            for f in &u.filters {
                put_str(out, f);
            }
        }
        Packet::UnsubAck(u) => {
            out.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(out);
                for r in &u.reasons {
                    out.put_u8(r.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => short_reason(d.reason.0, &d.properties, v5, false, out),
        Packet::Auth(a) => short_reason(a.reason.0, &a.properties, v5, true, out),
    }
}

fn short_reason(reason: u8, props: &Properties, v5: bool, props_with_reason: bool, out: &mut BytesMut) {
    match short_reason_len(reason, props, v5, props_with_reason) {
        0 => {}
        1 => out.put_u8(reason),
        _ => {
            out.put_u8(reason);
            props.encode(out);
        }
    }
}

fn connect(c: &Connect, v5: bool, out: &mut BytesMut) {
    put_str(out, "MQTT");
    out.put_u8(c.version.level());
    let mut flags = (c.clean_start as u8) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | (w.retain as u8) << 5;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive_secs);
    if v5 {
        c.properties.encode(out);
    }
    put_str(out, &c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            w.properties.encode(out);
        }
        put_str(out, &w.topic);
        put_binary(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(out, u);
    }
    if let Some(p) = &c.password {
        put_binary(out, p);
    }
}
