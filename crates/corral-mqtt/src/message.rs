//! An application message as the broker routes it, and one subscriber's copy of it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::codec::{Properties, Publish, QoS};

/// One published message, shared (`Arc`) by every queue it lands in; the payload is the
/// receive buffer's slice, never copied per subscriber. Dropped when the last queue lets go.
#[derive(Debug)]
pub(crate) struct Message {
    /// Unique and increasing across restarts; keys the message in the state log.
    pub id: u64,
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties forwarded to subscribers (payload format, content type, response
    /// topic, correlation data, user properties); `None` when there are none.
    pub props: Option<Box<Properties>>,
    /// Wall-clock expiry (Unix ms) from the Message Expiry Interval; survives restarts.
    pub expires_at_ms: Option<u64>,
    /// Publishing client, for no-local subscriptions.
    pub origin_client: Option<Arc<str>>,
    /// Tenant of the data, for tenant-scoped subscribers.
    pub origin_tenant: Option<Arc<str>>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Keeps only the properties a subscriber should see (§3.3.2.3: the server forwards these
/// unaltered; expiry is rewritten, topic alias and subscription identifiers are per-connection).
pub(crate) fn forwarded_properties(p: &Properties) -> Option<Box<Properties>> {
    let kept = Properties {
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        ..Properties::default()
    };
    (!kept.is_empty()).then(|| Box::new(kept))
}

impl Message {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// A message on its way to one session: the QoS and retain flag it is delivered with, and the
/// identifiers of the subscriptions it matched.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

impl Outgoing {
    /// The PUBLISH for this copy; `None` if the message expired meanwhile.
    pub fn to_publish(&self, packet_id: u16, dup: bool, now_ms: u64) -> Option<Publish> {
        let m = &self.message;
        let mut properties = match &m.props {
            Some(p) => Properties::clone(p),
            None => Properties::default(),
        };
        if let Some(at) = m.expires_at_ms {
            if at <= now_ms {
                return None;
            }
            // Rounded up so a message is never announced as already expired.
            properties.message_expiry_interval = Some((at - now_ms).div_ceil(1000) as u32);
        }
        properties.subscription_identifiers = self.subscription_ids.clone();
        Some(Publish {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: m.topic.clone(),
            packet_id,
            properties,
            payload: m.payload.clone(),
        })
    }
}
