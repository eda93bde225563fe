//! State log operations and their binary encoding.
//!
//! Every change to durable broker state is one [`Op`]. Each op *sets* something (a session's
//! expiry, a subscription, a message's place in a queue, a retained topic), so replaying any
//! suffix of the log on top of a snapshot taken within it converges to the same state: that is
//! what lets snapshots run concurrently with new operations.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::acl::Audience;
use crate::codec::wire::Reader;
use crate::codec::{Properties, PropertyContext, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
use crate::message::Message;
use crate::session::Subscription;

/// In a logged subscription's options byte (bits MQTT reserves): its owner was anonymous
/// ([`Audience::Public`]), or a broker user ([`Audience::User`], whose tenant and read filters
/// then fill the text that otherwise holds a tenant).
const PUBLIC_AUDIENCE: u8 = 0x40;
const USER_AUDIENCE: u8 = 0x80;

/// The text of an [`Audience::User`] in the log.
fn user_audience_text(tenant: &Option<Arc<str>>, read: &[String]) -> String {
    serde_json::json!({ "tenant": tenant.as_deref(), "read": read }).to_string()
}

fn user_audience(text: &str) -> DecResult<Audience> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| "bad user audience")?;
    let tenant = value["tenant"].as_str().map(Arc::from);
    let read: Vec<String> =
        value["read"].as_array().ok_or("bad user audience")?.iter().filter_map(|f| f.as_str().map(String::from)).collect();
    Ok(Audience::User { tenant, read: Arc::from(read) })
}

#[derive(Debug, Clone)]
pub(crate) struct RouteTarget {
    pub client_id: Arc<str>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    SessionUpsert {
        client_id: Arc<str>,
        expiry_secs: u32,
        protocol: ProtocolVersion,
        /// The session's [`Session::owner`](crate::session::Session). Encoded last, so logs
        /// written before it existed still decode (with an empty owner).
        owner: Arc<str>,
    },
    SessionDelete {
        client_id: Arc<str>,
    },
    Subscribe {
        client_id: Arc<str>,
        filter: String,
        subscription: Subscription,
    },
    Unsubscribe {
        client_id: Arc<str>,
        filter: String,
    },
    /// A message queued for the listed persistent sessions.
    Route {
        message: Arc<Message>,
        targets: Vec<RouteTarget>,
    },
    /// Sent under `packet_id` (so a resend after restart reuses it).
    Sent {
        client_id: Arc<str>,
        msg_id: u64,
        packet_id: u16,
    },
    /// PUBREC received: only PUBREL is resent from now on.
    Released {
        client_id: Arc<str>,
        msg_id: u64,
    },
    /// Acknowledged, expired or dropped: gone from the session.
    Done {
        client_id: Arc<str>,
        msg_id: u64,
    },
    InboundQos2 {
        client_id: Arc<str>,
        packet_id: u16,
        stored: bool,
    },
    RetainSet {
        message: Arc<Message>,
    },
    RetainDelete {
        topic: Arc<str>,
    },
}

mod tag {
    pub const SESSION_UPSERT: u8 = 1;
    pub const SESSION_DELETE: u8 = 2;
    pub const SUBSCRIBE: u8 = 3;
    pub const UNSUBSCRIBE: u8 = 4;
    pub const ROUTE: u8 = 5;
    pub const SENT: u8 = 6;
    pub const RELEASED: u8 = 7;
    pub const DONE: u8 = 8;
    pub const INBOUND_QOS2: u8 = 9;
    pub const RETAIN_SET: u8 = 10;
    pub const RETAIN_DELETE: u8 = 11;
}

struct Enc<'a>(&'a mut Vec<u8>);

impl Enc<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(s) => {
                self.u8(1);
                self.bytes(s.as_bytes());
            }
            None => self.u8(0),
        }
    }
    fn message(&mut self, m: &Message) {
        self.u64(m.id);
        self.bytes(m.topic.as_bytes());
        self.bytes(&m.payload);
        self.u8(m.qos as u8);
        self.u8(m.retain as u8);
        self.u64(m.expires_at_ms.unwrap_or(0));
        self.opt_str(m.origin_client.as_deref());
        self.opt_str(m.origin_tenant.as_deref());
        let mut props = BytesMut::new();
        if let Some(p) = &m.props {
            p.encode(&mut props);
        }
        self.bytes(&props);
    }
}

struct Dec<'a> {
    buf: &'a [u8],
}

type DecResult<T> = Result<T, &'static str>;

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> DecResult<&'a [u8]> {
        if self.buf.len() < n {
            return Err("truncated operation");
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> DecResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> DecResult<u16> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| "bad u16")?))
    }
    fn u32(&mut self) -> DecResult<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "bad u32")?))
    }
    fn u64(&mut self) -> DecResult<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| "bad u64")?))
    }
    fn bytes(&mut self) -> DecResult<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn str(&mut self) -> DecResult<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "invalid UTF-8")
    }
    fn arc_str(&mut self) -> DecResult<Arc<str>> {
        self.str().map(Arc::from)
    }
    fn opt_str(&mut self) -> DecResult<Option<Arc<str>>> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.arc_str().map(Some),
        }
    }
    fn qos(&mut self) -> DecResult<QoS> {
        QoS::from_u8(self.u8()?).ok_or("bad QoS")
    }
    fn message(&mut self) -> DecResult<Arc<Message>> {
        let id = self.u64()?;
        let topic = self.arc_str()?;
        let payload = Bytes::copy_from_slice(self.bytes()?);
        let qos = self.qos()?;
        let retain = self.u8()? != 0;
        let expires_at_ms = Some(self.u64()?).filter(|&t| t != 0);
        let origin_client = self.opt_str()?;
        let origin_tenant = self.opt_str()?;
        let raw_props = self.bytes()?;
        let props = if raw_props.is_empty() {
            None
        } else {
            let p = Properties::decode(&mut Reader::new(raw_props), PropertyContext::Publish)
                .map_err(|_| "bad message properties")?;
            Some(Box::new(p))
        };
        Ok(Arc::new(Message { id, topic, payload, qos, retain, props, expires_at_ms, origin_client, origin_tenant }))
    }
}

impl Op {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Enc(out);
        match self {
            Op::SessionUpsert { client_id, expiry_secs, protocol, owner } => {
                e.u8(tag::SESSION_UPSERT);
                e.bytes(client_id.as_bytes());
                e.u32(*expiry_secs);
                e.u8(protocol.level());
                e.bytes(owner.as_bytes());
            }
            Op::SessionDelete { client_id } => {
                e.u8(tag::SESSION_DELETE);
                e.bytes(client_id.as_bytes());
            }
            Op::Subscribe { client_id, filter, subscription } => {
                e.u8(tag::SUBSCRIBE);
                e.bytes(client_id.as_bytes());
                e.bytes(filter.as_bytes());
                // Older logs never set the audience bits (see PUBLIC_AUDIENCE).
                let (flag, text) = match &subscription.audience {
                    Audience::Everything => (0, None),
                    Audience::Tenant(tenant) => (0, Some(tenant.to_string())),
                    Audience::Public => (PUBLIC_AUDIENCE, None),
                    Audience::User { tenant, read } => (USER_AUDIENCE, Some(user_audience_text(tenant, read))),
                };
                e.u8(subscription.options.to_byte() | flag);
                e.u32(subscription.id.unwrap_or(0));
                e.opt_str(text.as_deref());
            }
            Op::Unsubscribe { client_id, filter } => {
                e.u8(tag::UNSUBSCRIBE);
                e.bytes(client_id.as_bytes());
                e.bytes(filter.as_bytes());
            }
            Op::Route { message, targets } => {
                e.u8(tag::ROUTE);
                e.message(message);
                e.u32(targets.len() as u32);
                for t in targets {
                    e.bytes(t.client_id.as_bytes());
                    e.u8(t.qos as u8);
                    e.u8(t.retain as u8);
                    e.u32(t.subscription_ids.len() as u32);
                    for &id in &t.subscription_ids {
                        e.u32(id);
                    }
                }
            }
            Op::Sent { client_id, msg_id, packet_id } => {
                e.u8(tag::SENT);
                e.bytes(client_id.as_bytes());
                e.u64(*msg_id);
                e.u16(*packet_id);
            }
            Op::Released { client_id, msg_id } => {
                e.u8(tag::RELEASED);
                e.bytes(client_id.as_bytes());
                e.u64(*msg_id);
            }
            Op::Done { client_id, msg_id } => {
                e.u8(tag::DONE);
                e.bytes(client_id.as_bytes());
                e.u64(*msg_id);
            }
            Op::InboundQos2 { client_id, packet_id, stored } => {
                e.u8(tag::INBOUND_QOS2);
                e.bytes(client_id.as_bytes());
                e.u16(*packet_id);
                e.u8(*stored as u8);
            }
            Op::RetainSet { message } => {
                e.u8(tag::RETAIN_SET);
                e.message(message);
            }
            Op::RetainDelete { topic } => {
                e.u8(tag::RETAIN_DELETE);
                e.bytes(topic.as_bytes());
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Op, &'static str> {
        let mut d = Dec { buf };
        let op = match d.u8()? {
            tag::SESSION_UPSERT => Op::SessionUpsert {
                client_id: d.arc_str()?,
                expiry_secs: d.u32()?,
                protocol: match d.u8()? {
                    4 => ProtocolVersion::V311,
                    5 => ProtocolVersion::V5,
                    _ => return Err("bad protocol level"),
                },
                owner: if d.buf.is_empty() { Arc::from("") } else { d.arc_str()? },
            },
            tag::SESSION_DELETE => Op::SessionDelete { client_id: d.arc_str()? },
            tag::SUBSCRIBE => {
                let client_id = d.arc_str()?;
                let filter = d.str()?.to_owned();
                let byte = d.u8()?;
                let options = SubscriptionOptions {
                    qos: QoS::from_u8(byte & 3).ok_or("bad QoS")?,
                    no_local: byte & 4 != 0,
                    retain_as_published: byte & 8 != 0,
                    retain_handling: match (byte >> 4) & 3 {
                        0 => RetainHandling::SendAtSubscribe,
                        1 => RetainHandling::SendIfNew,
                        _ => RetainHandling::DoNotSend,
                    },
                };
                let id = Some(d.u32()?).filter(|&i| i != 0);
                let audience = match d.opt_str()? {
                    Some(text) if byte & USER_AUDIENCE != 0 => user_audience(&text)?,
                    Some(tenant) => Audience::Tenant(tenant),
                    None if byte & PUBLIC_AUDIENCE != 0 => Audience::Public,
                    None => Audience::Everything,
                };
                Op::Subscribe { client_id, filter, subscription: Subscription { options, id, audience } }
            }
            tag::UNSUBSCRIBE => Op::Unsubscribe { client_id: d.arc_str()?, filter: d.str()?.to_owned() },
            tag::ROUTE => {
                let message = d.message()?;
                let n = d.u32()? as usize;
                let mut targets = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let client_id = d.arc_str()?;
                    let qos = d.qos()?;
                    let retain = d.u8()? != 0;
                    let ids = d.u32()? as usize;
                    let mut subscription_ids = Vec::with_capacity(ids.min(64));
                    for _ in 0..ids {
                        subscription_ids.push(d.u32()?);
                    }
                    targets.push(RouteTarget { client_id, qos, retain, subscription_ids });
                }
                Op::Route { message, targets }
            }
            tag::SENT => Op::Sent { client_id: d.arc_str()?, msg_id: d.u64()?, packet_id: d.u16()? },
            tag::RELEASED => Op::Released { client_id: d.arc_str()?, msg_id: d.u64()? },
            tag::DONE => Op::Done { client_id: d.arc_str()?, msg_id: d.u64()? },
            tag::INBOUND_QOS2 => Op::InboundQos2 { client_id: d.arc_str()?, packet_id: d.u16()?, stored: d.u8()? != 0 },
            tag::RETAIN_SET => Op::RetainSet { message: d.message()? },
            tag::RETAIN_DELETE => Op::RetainDelete { topic: d.arc_str()? },
            _ => return Err("unknown operation"),
        };
        if !d.buf.is_empty() {
            return Err("trailing bytes after operation");
        }
        Ok(op)
    }
}

/// Appends `op` to a batch as `[u32 length][op]`.
pub(crate) fn frame(op: &Op, batch: &mut Vec<u8>) {
    let start = batch.len();
    batch.extend_from_slice(&[0; 4]);
    op.encode(batch);
    let len = (batch.len() - start - 4) as u32;
    batch[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Splits a batch back into ops.
pub(crate) fn unframe(mut batch: &[u8], mut each: impl FnMut(Op)) -> Result<(), &'static str> {
    while !batch.is_empty() {
        if batch.len() < 4 {
            return Err("truncated batch");
        }
        let len = u32::from_be_bytes([batch[0], batch[1], batch[2], batch[3]]) as usize;
        let body = batch.get(4..4 + len).ok_or("truncated batch")?;
        each(Op::decode(body)?);
        batch = &batch[4 + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Arc<Message> {
        Arc::new(Message {
            id: 42,
            topic: Arc::from("a/b"),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::ExactlyOnce,
            retain: true,
            props: Some(Box::new(Properties {
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..Properties::default()
            })),
            expires_at_ms: Some(1_900_000_000_000),
            origin_client: Some(Arc::from("pub")),
            origin_tenant: Some(Arc::from("acme")),
        })
    }

    #[test]
    fn every_op_round_trips_through_a_batch() {
        let c: Arc<str> = Arc::from("client");
        let ops = vec![
            Op::SessionUpsert {
                client_id: c.clone(),
                expiry_secs: 3600,
                protocol: ProtocolVersion::V5,
                owner: Arc::from("device:client"),
            },
            Op::SessionDelete { client_id: c.clone() },
            Op::Subscribe {
                client_id: c.clone(),
                filter: "a/#".into(),
                subscription: Subscription {
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::SendIfNew,
                    },
                    id: Some(7),
                    audience: Audience::Tenant(Arc::from("acme")),
                },
            },
            Op::Subscribe {
                client_id: c.clone(),
                filter: "#".into(),
                subscription: Subscription {
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        retain_handling: RetainHandling::DoNotSend,
                        ..Default::default()
                    },
                    id: None,
                    audience: Audience::Public,
                },
            },
            Op::Subscribe {
                client_id: c.clone(),
                filter: "sensors/#".into(),
                subscription: Subscription {
                    options: SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() },
                    id: Some(3),
                    audience: Audience::User {
                        tenant: Some(Arc::from("acme")),
                        read: Arc::from(vec!["sensors/gw/#".to_string()]),
                    },
                },
            },
            Op::Unsubscribe { client_id: c.clone(), filter: "a/#".into() },
            Op::Route {
                message: message(),
                targets: vec![RouteTarget {
                    client_id: c.clone(),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    subscription_ids: vec![1, 2],
                }],
            },
            Op::Sent { client_id: c.clone(), msg_id: 42, packet_id: 9 },
            Op::Released { client_id: c.clone(), msg_id: 42 },
            Op::Done { client_id: c.clone(), msg_id: 42 },
            Op::InboundQos2 { client_id: c.clone(), packet_id: 5, stored: true },
            Op::RetainSet { message: message() },
            Op::RetainDelete { topic: Arc::from("a/b") },
        ];
        let mut batch = Vec::new();
        for op in &ops {
            frame(op, &mut batch);
        }
        let mut back = Vec::new();
        unframe(&batch, |op| back.push(format!("{op:?}"))).unwrap();
        let want: Vec<String> = ops.iter().map(|op| format!("{op:?}")).collect();
        assert_eq!(back, want);
        assert!(unframe(&batch[..batch.len() - 1], |_| {}).is_err());
    }
}
