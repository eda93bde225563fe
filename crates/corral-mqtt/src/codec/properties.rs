//! MQTT 5 properties (§2.2.2): one struct holding every property, decoded with the per-packet
//! rules (which property may appear where, at most once unless repeatable, valid values).

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::{MAX_VARINT, Reader, put_binary, put_str, put_varint, varint_len};
use crate::error::DecodeError;

/// Every MQTT 5 property; `None`/empty means absent. Packets carry the subset the spec allows
/// for them (enforced on decode; the encoder writes whatever is set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// Repeatable in PUBLISH (one per matching subscription); at most one in SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

/// Which packet a property block belongs to; decides what may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    Connect,
    ConnAck,
    Publish,
    Will,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// May property `pid` appear in `ctx`? (MQTT 5 §2.2.2.2 table)
fn allowed(pid: u8, ctx: PropertyContext) -> bool {
    use PropertyContext::*;
    use id::*;
    match pid {
        PAYLOAD_FORMAT_INDICATOR | MESSAGE_EXPIRY_INTERVAL | CONTENT_TYPE | RESPONSE_TOPIC | CORRELATION_DATA => {
            matches!(ctx, Publish | Will)
        }
        SUBSCRIPTION_IDENTIFIER => matches!(ctx, Publish | Subscribe),
        SESSION_EXPIRY_INTERVAL => matches!(ctx, Connect | ConnAck | Disconnect),
        ASSIGNED_CLIENT_IDENTIFIER
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => ctx == ConnAck,
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => matches!(ctx, Connect | ConnAck | Auth),
        REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION => ctx == Connect,
        WILL_DELAY_INTERVAL => ctx == Will,
        SERVER_REFERENCE => matches!(ctx, ConnAck | Disconnect),
        REASON_STRING => matches!(ctx, ConnAck | Ack | SubAck | UnsubAck | Disconnect | Auth),
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => {
            matches!(ctx, Connect | ConnAck)
        }
        TOPIC_ALIAS => ctx == Publish,
        USER_PROPERTY => true,
        _ => false,
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property appears twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn flag(value: u8) -> Result<u8, DecodeError> {
    if value > 1 {
        return Err(DecodeError::Protocol("property value must be 0 or 1"));
    }
    Ok(value)
}

impl Properties {
    /// True when no property is set (the encoder then writes a single zero length byte).
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Reads a property block (length + properties) for a packet of kind `ctx`.
    pub(crate) fn decode(r: &mut Reader<'_>, ctx: PropertyContext) -> Result<Properties, DecodeError> {
        let len = r.varint()? as usize;
        if len > r.remaining() {
            return Err(DecodeError::Malformed("property length exceeds packet"));
        }
        let block = r.take(len)?;
        let mut r = Reader::new(block);
        let mut p = Properties::default();
        while !r.is_empty() {
            // The identifier is a variable byte integer; all defined ones fit one byte.
            let pid = r.varint()?;
            let pid = u8::try_from(pid).map_err(|_| DecodeError::Malformed("unknown property"))?;
            if !allowed(pid, ctx) {
                return Err(if pid > id::SHARED_SUBSCRIPTION_AVAILABLE || pid == 0 {
                    DecodeError::Malformed("unknown property")
                } else {
                    DecodeError::Protocol("property not allowed in this packet")
                });
            }
            p.read_one(pid, &mut r, ctx)?;
        }
        Ok(p)
    }

    fn read_one(&mut self, pid: u8, r: &mut Reader<'_>, ctx: PropertyContext) -> Result<(), DecodeError> {
        use id::*;
        let string = |r: &mut Reader<'_>| r.utf8().map(str::to_owned);
        let binary = |r: &mut Reader<'_>| r.binary().map(Bytes::copy_from_slice);
        match pid {
            PAYLOAD_FORMAT_INDICATOR => set_once(&mut self.payload_format_indicator, flag(r.u8()?)?),
            MESSAGE_EXPIRY_INTERVAL => set_once(&mut self.message_expiry_interval, r.u32()?),
            CONTENT_TYPE => set_once(&mut self.content_type, string(r)?),
            RESPONSE_TOPIC => {
                let topic = string(r)?;
                if !crate::topic::is_valid_topic_name(&topic) {
                    return Err(DecodeError::Protocol("response topic must be a valid topic name"));
                }
                set_once(&mut self.response_topic, topic)
            }
            CORRELATION_DATA => set_once(&mut self.correlation_data, binary(r)?),
            SUBSCRIPTION_IDENTIFIER => {
                let value = r.varint()?;
                if value == 0 {
                    return Err(DecodeError::Protocol("subscription identifier 0"));
                }
                if ctx == PropertyContext::Subscribe && !self.subscription_identifiers.is_empty() {
                    return Err(DecodeError::Protocol("property appears twice"));
                }
                self.subscription_identifiers.push(value);
                Ok(())
            }
            SESSION_EXPIRY_INTERVAL => set_once(&mut self.session_expiry_interval, r.u32()?),
            ASSIGNED_CLIENT_IDENTIFIER => set_once(&mut self.assigned_client_identifier, string(r)?),
            SERVER_KEEP_ALIVE => set_once(&mut self.server_keep_alive, r.u16()?),
            AUTHENTICATION_METHOD => set_once(&mut self.authentication_method, string(r)?),
            AUTHENTICATION_DATA => set_once(&mut self.authentication_data, binary(r)?),
            REQUEST_PROBLEM_INFORMATION => set_once(&mut self.request_problem_information, flag(r.u8()?)?),
            WILL_DELAY_INTERVAL => set_once(&mut self.will_delay_interval, r.u32()?),
            REQUEST_RESPONSE_INFORMATION => set_once(&mut self.request_response_information, flag(r.u8()?)?),
            RESPONSE_INFORMATION => set_once(&mut self.response_information, string(r)?),
            SERVER_REFERENCE => set_once(&mut self.server_reference, string(r)?),
            REASON_STRING => set_once(&mut self.reason_string, string(r)?),
            RECEIVE_MAXIMUM => {
                let v = r.u16()?;
                if v == 0 {
                    return Err(DecodeError::Protocol("receive maximum 0"));
                }
                set_once(&mut self.receive_maximum, v)
            }
            TOPIC_ALIAS_MAXIMUM => set_once(&mut self.topic_alias_maximum, r.u16()?),
            TOPIC_ALIAS => set_once(&mut self.topic_alias, r.u16()?),
            MAXIMUM_QOS => set_once(&mut self.maximum_qos, flag(r.u8()?)?),
            RETAIN_AVAILABLE => set_once(&mut self.retain_available, flag(r.u8()?)?),
            USER_PROPERTY => {
                let key = string(r)?;
                let value = string(r)?;
                self.user_properties.push((key, value));
                Ok(())
            }
            MAXIMUM_PACKET_SIZE => {
                let v = r.u32()?;
                if v == 0 {
                    return Err(DecodeError::Protocol("maximum packet size 0"));
                }
                set_once(&mut self.maximum_packet_size, v)
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => set_once(&mut self.wildcard_subscription_available, flag(r.u8()?)?),
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => set_once(&mut self.subscription_identifier_available, flag(r.u8()?)?),
            SHARED_SUBSCRIPTION_AVAILABLE => set_once(&mut self.shared_subscription_available, flag(r.u8()?)?),
            _ => Err(DecodeError::Malformed("unknown property")),
        }
    }

    /// Bytes of the property block body (without its length prefix).
    pub fn encoded_len(&self) -> usize {
        let s = |v: &Option<String>| v.as_ref().map_or(0, |s| 3 + s.len());
        let b = |v: &Option<Bytes>| v.as_ref().map_or(0, |s| 3 + s.len());
        let n = |present: bool, size: usize| if present { 1 + size } else { 0 };
        n(self.payload_format_indicator.is_some(), 1)
            + n(self.message_expiry_interval.is_some(), 4)
            + s(&self.content_type)
            + s(&self.response_topic)
            + b(&self.correlation_data)
            + self.subscription_identifiers.iter().map(|&v| 1 + varint_len(v)).sum::<usize>()
            + n(self.session_expiry_interval.is_some(), 4)
            + s(&self.assigned_client_identifier)
            + n(self.server_keep_alive.is_some(), 2)
            + s(&self.authentication_method)
            + b(&self.authentication_data)
            + n(self.request_problem_information.is_some(), 1)
            + n(self.will_delay_interval.is_some(), 4)
            + n(self.request_response_information.is_some(), 1)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + n(self.receive_maximum.is_some(), 2)
            + n(self.topic_alias_maximum.is_some(), 2)
            + n(self.topic_alias.is_some(), 2)
            + n(self.maximum_qos.is_some(), 1)
            + n(self.retain_available.is_some(), 1)
            + self.user_properties.iter().map(|(k, v)| 5 + k.len() + v.len()).sum::<usize>()
            + n(self.maximum_packet_size.is_some(), 4)
            + n(self.wildcard_subscription_available.is_some(), 1)
            + n(self.subscription_identifier_available.is_some(), 1)
            + n(self.shared_subscription_available.is_some(), 1)
    }

    /// Length prefix plus body.
    pub fn block_len(&self) -> usize {
        let len = self.encoded_len();
        varint_len(len as u32) + len
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        use id::*;
        put_varint(out, (self.encoded_len() as u32).min(MAX_VARINT));
        let u8p = |out: &mut BytesMut, pid: u8, v: Option<u8>| {
            if let Some(v) = v {
                out.put_u8(pid);
                out.put_u8(v);
            }
        };
        let u16p = |out: &mut BytesMut, pid: u8, v: Option<u16>| {
            if let Some(v) = v {
                out.put_u8(pid);
                out.put_u16(v);
            }
        };
        let u32p = |out: &mut BytesMut, pid: u8, v: Option<u32>| {
            if let Some(v) = v {
                out.put_u8(pid);
                out.put_u32(v);
            }
        };
        let strp = |out: &mut BytesMut, pid: u8, v: &Option<String>| {
            if let Some(v) = v {
                out.put_u8(pid);
                put_str(out, v);
            }
        };
        let binp = |out: &mut BytesMut, pid: u8, v: &Option<Bytes>| {
            if let Some(v) = v {
                out.put_u8(pid);
                put_binary(out, v);
            }
        };
        u8p(out, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        u32p(out, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        strp(out, CONTENT_TYPE, &self.content_type);
        strp(out, RESPONSE_TOPIC, &self.response_topic);
        binp(out, CORRELATION_DATA, &self.correlation_data);
        for &v in &self.subscription_identifiers {
            out.put_u8(SUBSCRIPTION_IDENTIFIER);
            put_varint(out, v.min(MAX_VARINT));
        }
        u32p(out, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        strp(out, ASSIGNED_CLIENT_IDENTIFIER, &self.assigned_client_identifier);
        u16p(out, SERVER_KEEP_ALIVE, self.server_keep_alive);
        strp(out, AUTHENTICATION_METHOD, &self.authentication_method);
        binp(out, AUTHENTICATION_DATA, &self.authentication_data);
        u8p(out, REQUEST_PROBLEM_INFORMATION, self.request_problem_information);
        u32p(out, WILL_DELAY_INTERVAL, self.will_delay_interval);
        u8p(out, REQUEST_RESPONSE_INFORMATION, self.request_response_information);
        strp(out, RESPONSE_INFORMATION, &self.response_information);
        strp(out, SERVER_REFERENCE, &self.server_reference);
        strp(out, REASON_STRING, &self.reason_string);
        u16p(out, RECEIVE_MAXIMUM, self.receive_maximum);
        u16p(out, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        u16p(out, TOPIC_ALIAS, self.topic_alias);
        u8p(out, MAXIMUM_QOS, self.maximum_qos);
        u8p(out, RETAIN_AVAILABLE, self.retain_available);
        for (k, v) in &self.user_properties {
            out.put_u8(USER_PROPERTY);
            put_str(out, k);
            put_str(out, v);
        }
        u32p(out, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        u8p(out, WILDCARD_SUBSCRIPTION_AVAILABLE, self.wildcard_subscription_available);
        u8p(out, SUBSCRIPTION_IDENTIFIER_AVAILABLE, self.subscription_identifier_available);
        u8p(out, SHARED_SUBSCRIPTION_AVAILABLE, self.shared_subscription_available);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], ctx: PropertyContext) -> Result<Properties, DecodeError> {
        Properties::decode(&mut Reader::new(bytes), ctx)
    }

    #[test]
    fn publish_properties_round_trip() {
        let p = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("application/json".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            subscription_identifiers: vec![1, 300_000],
            topic_alias: Some(3),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            ..Properties::default()
        };
        let mut out = BytesMut::new();
        p.encode(&mut out);
        assert_eq!(out.len(), p.block_len());
        assert_eq!(decode(&out, PropertyContext::Publish).unwrap(), p);
    }

    #[test]
    fn rejects_duplicates_wrong_context_and_bad_values() {
        // session expiry twice
        let dup = [10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
        assert!(matches!(decode(&dup, PropertyContext::Connect), Err(DecodeError::Protocol(_))));
        // topic alias in CONNECT
        assert!(matches!(decode(&[3, 0x23, 0, 1], PropertyContext::Connect), Err(DecodeError::Protocol(_))));
        // receive maximum 0
        assert!(decode(&[3, 0x21, 0, 0], PropertyContext::Connect).is_err());
        // unknown identifier
        assert!(matches!(decode(&[2, 0x7F, 0], PropertyContext::Connect), Err(DecodeError::Malformed(_))));
        // length beyond the packet
        assert!(decode(&[9, 0x01, 0], PropertyContext::Publish).is_err());
        // subscription id 0
        assert!(decode(&[2, 0x0B, 0], PropertyContext::Subscribe).is_err());
    }
}
