//! Incremental, allocation-bounded packet decoding.
//!
//! [`decode_packet`] looks at the fixed header in the caller's buffer: when the packet is not
//! complete yet it returns `Ok(None)` (reserving at most the declared, size-checked length), when
//! it is, it splits the frame off without copying and parses it. Payloads are `Bytes` slices of
//! that frame, so a PUBLISH payload reaches every subscriber without a copy. No input panics.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::packet::*;
use super::properties::{Properties, PropertyContext};
use super::reason::{self, ReasonCode};
use super::wire::{Reader, decode_varint};
use crate::error::DecodeError;
use crate::topic;

/// Length of the fixed header and of the whole packet at the start of `buf`, once known.
/// Fails as soon as the declared size exceeds `max_packet_size`, before the body arrives.
pub fn frame_len(buf: &[u8], max_packet_size: usize) -> Result<Option<(usize, usize)>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let Some((remaining, varint_len)) = decode_varint(&buf[1..])? else {
        return Ok(None);
    };
    let header_len = 1 + varint_len;
    let total = header_len + remaining as usize;
    if total > max_packet_size {
        return Err(DecodeError::TooLarge { size: total, max: max_packet_size });
    }
    Ok(Some((header_len, total)))
}

/// Takes one complete packet off the front of `buf`, or returns `Ok(None)` if more bytes are
/// needed. `version` is the connection's protocol (a CONNECT carries its own).
pub fn decode_packet(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some((header_len, total)) = frame_len(buf, max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(total).freeze();
    parse(frame[0], frame.slice(header_len..), version).map(Some)
}

/// The protocol level byte of a CONNECT at the start of `buf`, if that much has arrived. Lets the
/// broker answer a broken CONNECT in the client's own protocol version.
pub fn peek_connect_level(buf: &[u8]) -> Option<u8> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    let (_, n) = decode_varint(buf.get(1..)?).ok()??;
    let body = buf.get(1 + n..)?;
    let name_len = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    body.get(2 + name_len).copied()
}

/// Parses one packet body given its first header byte.
pub fn parse(first: u8, body: Bytes, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let kind = first >> 4;
    let flags = first & 0x0F;
    let expect_flags = |want: u8| {
        if flags == want { Ok(()) } else { Err(DecodeError::Malformed("reserved fixed header flags")) }
    };
    let v5 = version == ProtocolVersion::V5;
    match kind {
        1 => {
            expect_flags(0)?;
            connect(&body).map(|c| Packet::Connect(Box::new(c)))
        }
        2 => {
            expect_flags(0)?;
            connack(&body, v5).map(Packet::ConnAck)
        }
        3 => publish(flags, &body, v5).map(Packet::Publish),
        4 => {
            expect_flags(0)?;
            ack(&body, v5, reason::PUBACK_CODES).map(Packet::PubAck)
        }
        5 => {
            expect_flags(0)?;
            ack(&body, v5, reason::PUBACK_CODES).map(Packet::PubRec)
        }
        6 => {
            expect_flags(2)?;
            ack(&body, v5, reason::PUBREL_CODES).map(Packet::PubRel)
        }
        7 => {
            expect_flags(0)?;
            ack(&body, v5, reason::PUBREL_CODES).map(Packet::PubComp)
        }
        8 => {
            expect_flags(2)?;
            subscribe(&body, v5).map(Packet::Subscribe)
        }
        9 => {
            expect_flags(0)?;
            suback(&body, v5).map(Packet::SubAck)
        }
        10 => {
            expect_flags(2)?;
            unsubscribe(&body, v5).map(Packet::Unsubscribe)
        }
        11 => {
            expect_flags(0)?;
            unsuback(&body, v5).map(Packet::UnsubAck)
        }
        12 | 13 => {
            expect_flags(0)?;
            if !body.is_empty() {
                return Err(DecodeError::Malformed("PINGREQ/PINGRESP with a body"));
            }
            Ok(if kind == 12 { Packet::PingReq } else { Packet::PingResp })
        }
        14 => {
            expect_flags(0)?;
            disconnect(&body, v5).map(Packet::Disconnect)
        }
        15 if v5 => {
            expect_flags(0)?;
            auth(&body).map(Packet::Auth)
        }
        _ => Err(DecodeError::Malformed("reserved packet type")),
    }
}

fn finish(r: &Reader<'_>) -> Result<(), DecodeError> {
    if r.is_empty() { Ok(()) } else { Err(DecodeError::Malformed("trailing bytes after packet")) }
}

fn packet_id(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

fn reason_in(code: u8, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    if allowed.contains(&code) {
        Ok(ReasonCode(code))
    } else {
        Err(DecodeError::Protocol("reason code not allowed in this packet"))
    }
}

fn connect(body: &[u8]) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body);
    let name = r.binary()?;
    let level = r.u8()?;
    if name != b"MQTT" {
        // "MQIsdp" is MQTT 3.1 (level 3): a known protocol this broker does not speak.
        if name == b"MQIsdp" {
            return Err(DecodeError::UnsupportedProtocolVersion(level));
        }
        return Err(DecodeError::Protocol("protocol name is not MQTT"));
    }
    let version = match level {
        4 => ProtocolVersion::V311,
        5 => ProtocolVersion::V5,
        other => return Err(DecodeError::UnsupportedProtocolVersion(other)),
    };
    let v5 = version == ProtocolVersion::V5;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed("will QoS/retain set without a will"));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive_secs = r.u16()?;
    let properties = if v5 { Properties::decode(&mut r, PropertyContext::Connect)? } else { Properties::default() };
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(DecodeError::Protocol("authentication data without a method"));
    }
    let client_id = r.utf8()?.to_owned();
    let will = if will_flag {
        let properties = if v5 { Properties::decode(&mut r, PropertyContext::Will)? } else { Properties::default() };
        let topic = r.utf8()?;
        if !topic::is_valid_topic_name(topic) {
            return Err(DecodeError::TopicNameInvalid);
        }
        let topic = topic.to_owned();
        let payload = Bytes::copy_from_slice(r.binary()?);
        Some(LastWill { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if username_flag { Some(r.utf8()?.to_owned()) } else { None };
    let password = if password_flag { Some(Bytes::copy_from_slice(r.binary()?)) } else { None };
    finish(&r)?;
    Ok(Connect { version, client_id, clean_start, keep_alive_secs, properties, will, username, password })
}

fn connack(body: &[u8], v5: bool) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(body);
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("CONNACK reserved flags"));
    }
    let code = r.u8()?;
    let (reason, properties) = if v5 {
        let reason = reason_in(code, reason::CONNACK_CODES)?;
        (reason, Properties::decode(&mut r, PropertyContext::ConnAck)?)
    } else {
        let reason = match code {
            0 => ReasonCode::SUCCESS,
            1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            3 => ReasonCode::SERVER_UNAVAILABLE,
            4 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            5 => ReasonCode::NOT_AUTHORIZED,
            _ => return Err(DecodeError::Protocol("unknown CONNACK return code")),
        };
        (reason, Properties::default())
    };
    finish(&r)?;
    Ok(ConnAck { session_present: flags & 1 == 1, reason, properties })
}

fn publish(flags: u8, body: &Bytes, v5: bool) -> Result<Publish, DecodeError> {
    let dup = flags & 0x08 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH QoS 3"))?;
    let retain = flags & 0x01 != 0;
    if qos == QoS::AtMostOnce && dup {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let mut r = Reader::new(body);
    let topic = r.utf8()?;
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { packet_id(&mut r)? };
    let properties = if v5 { Properties::decode(&mut r, PropertyContext::Publish)? } else { Properties::default() };
    let aliased = properties.topic_alias.is_some();
    if topic.is_empty() {
        if !aliased {
            return Err(DecodeError::TopicNameInvalid);
        }
    } else if !topic::is_valid_topic_name(topic) {
        return Err(DecodeError::TopicNameInvalid);
    }
    let topic: Arc<str> = Arc::from(topic);
    let payload = body.slice(r.position()..);
    Ok(Publish { dup, qos, retain, topic, packet_id, properties, payload })
}

fn ack(body: &[u8], v5: bool, allowed: &[u8]) -> Result<PubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r)?;
    let mut reason = ReasonCode::SUCCESS;
    let mut properties = Properties::default();
    if v5 {
        if !r.is_empty() {
            reason = reason_in(r.u8()?, allowed)?;
        }
        if !r.is_empty() {
            properties = Properties::decode(&mut r, PropertyContext::Ack)?;
        }
    }
    finish(&r)?;
    Ok(PubAck { packet_id, reason, properties })
}

fn subscribe(body: &[u8], v5: bool) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r)?;
    let properties = if v5 { Properties::decode(&mut r, PropertyContext::Subscribe)? } else { Properties::default() };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.utf8()?;
        let byte = r.u8()?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if byte & reserved != 0 {
            return Err(DecodeError::Malformed("subscription options reserved bits"));
        }
        let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::Protocol("retain handling 3")),
        };
        let options =
            SubscriptionOptions { qos, no_local: byte & 0x04 != 0, retain_as_published: byte & 0x08 != 0, retain_handling };
        if !topic::is_valid_filter(filter) {
            return Err(DecodeError::TopicFilterInvalid);
        }
        if options.no_local && topic::parse_shared(filter).is_some() {
            return Err(DecodeError::Protocol("no-local on a shared subscription"));
        }
        filters.push((filter.to_owned(), options));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe { packet_id, properties, filters })
}

fn suback(body: &[u8], v5: bool) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r)?;
    let properties = if v5 { Properties::decode(&mut r, PropertyContext::SubAck)? } else { Properties::default() };
    let mut reasons = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = r.u8()?;
        let allowed: &[u8] = if v5 { reason::SUBACK_CODES } else { &[0, 1, 2, 0x80] };
        reasons.push(reason_in(code, allowed)?);
    }
    Ok(SubAck { packet_id, properties, reasons })
}

fn unsubscribe(body: &[u8], v5: bool) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r)?;
    let properties = if v5 { Properties::decode(&mut r, PropertyContext::Unsubscribe)? } else { Properties::default() };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.utf8()?;
        if !topic::is_valid_filter(filter) {
            return Err(DecodeError::TopicFilterInvalid);
        }
        filters.push(filter.to_owned());
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe { packet_id, properties, filters })
}

fn unsuback(body: &[u8], v5: bool) -> Result<UnsubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r)?;
    let mut properties = Properties::default();
    let mut reasons = Vec::new();
    if v5 {
        properties = Properties::decode(&mut r, PropertyContext::UnsubAck)?;
        while !r.is_empty() {
            reasons.push(reason_in(r.u8()?, reason::UNSUBACK_CODES)?);
        }
    }
    finish(&r)?;
    Ok(UnsubAck { packet_id, properties, reasons })
}

fn disconnect(body: &[u8], v5: bool) -> Result<Disconnect, DecodeError> {
    let mut r = Reader::new(body);
    let mut out = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    if v5 {
        if !r.is_empty() {
            out.reason = reason_in(r.u8()?, reason::DISCONNECT_CODES)?;
        }
        if !r.is_empty() {
            out.properties = Properties::decode(&mut r, PropertyContext::Disconnect)?;
        }
    }
    finish(&r)?;
    Ok(out)
}

fn auth(body: &[u8]) -> Result<Auth, DecodeError> {
    let mut r = Reader::new(body);
    let mut out = Auth { reason: ReasonCode::SUCCESS, properties: Properties::default() };
    if !r.is_empty() {
        out.reason = reason_in(r.u8()?, reason::AUTH_CODES)?;
        out.properties = Properties::decode(&mut r, PropertyContext::Auth)?;
    }
    finish(&r)?;
    Ok(out)
}
