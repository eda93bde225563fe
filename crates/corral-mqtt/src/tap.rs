//! Taps: in-process listeners on a topic filter. Another door of the platform (CoAP) uses one to
//! hear the commands published for its devices, whoever published them (a rule, an
//! application over MQTT), without being an MQTT client.

use crate::message::Message;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A message routed through the broker, as a tap sees it.
#[derive(Debug, Clone)]
pub struct Tapped {
    pub topic: Arc<str>,
    pub payload: Bytes,
    /// Published by an MQTT client (not by the platform through the broker's API).
    pub from_client: bool,
    /// The tenant the message belongs to, when known.
    pub tenant: Option<Arc<str>>,
    /// MQTT 5 request/response: where the publisher wants an answer, and the data it wants
    /// back with it.
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
}

/// One listener: its filter and the channel it reads. Dropped when the receiver is dropped
/// (found closed at the next matching message).
pub(crate) struct Tap {
    pub filter: String,
    pub sender: mpsc::Sender<Tapped>,
}

/// Offers `msg` to every tap whose filter matches. A tap that is full loses the message (with a
/// warning): the broker never waits for an in-process listener.
pub(crate) fn offer(taps: &[Tap], msg: &Message) {
    for tap in taps {
        if !crate::topic::matches(&tap.filter, &msg.topic) {
            continue;
        }
        let tapped = Tapped {
            topic: msg.topic.clone(),
            payload: msg.payload.clone(),
            from_client: msg.origin_client.is_some(),
            tenant: msg.origin_tenant.clone(),
            response_topic: msg.props.as_ref().and_then(|p| p.response_topic.clone()),
            correlation_data: msg.props.as_ref().and_then(|p| p.correlation_data.clone()),
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = tap.sender.try_send(tapped) {
            tracing::warn!(filter = %tap.filter, topic = %msg.topic, "tap full: message not passed on");
        }
    }
}
