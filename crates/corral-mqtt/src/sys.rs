//! The `$SYS/broker/…` tree that monitoring tools written for Mosquitto read: clients connected,
//! messages and bytes in and out, subscriptions, retained messages, uptime and version,
//! published as retained QoS 0 messages every `BrokerConfig::sys_interval`.
//!
//! The numbers are the counters of `/metrics`, under Mosquitto's topic names. They are kept in
//! memory only (rebuilt at start, never written to the state log), and only clients that may
//! read what no tenant owns receive them: anonymous clients in open mode and unscoped
//! applications, not devices or tenant-scoped tokens (see `acl::Audience`). A root wildcard
//! does not match them (MQTT §4.7.2): subscribe to `$SYS/#`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;

use crate::codec::QoS;
use crate::message::Message;
use crate::metrics::MetricsSnapshot;
use crate::state::BrokerState;

/// The `$SYS` topics and their payloads for one snapshot, `uptime` after the broker started.
pub(crate) fn tree(m: &MetricsSnapshot, uptime: Duration) -> Vec<(&'static str, String)> {
    let sum = |counts: &[u64]| counts.iter().sum::<u64>();
    let dropped =
        sum(&[m.dropped_qos0_backlog, m.dropped_queue_full, m.dropped_expired, m.dropped_too_large, m.dropped_offline_qos0]);
    let (received, sent) = (sum(&m.messages_in_by_qos), sum(&m.messages_out_by_qos));
    vec![
        ("$SYS/broker/version", format!("corral {}", env!("CARGO_PKG_VERSION"))),
        ("$SYS/broker/uptime", format!("{} seconds", uptime.as_secs())),
        ("$SYS/broker/clients/connected", m.connections_current.to_string()),
        ("$SYS/broker/clients/disconnected", m.sessions.saturating_sub(m.connections_current).to_string()),
        ("$SYS/broker/clients/total", m.sessions.max(m.connections_current).to_string()),
        ("$SYS/broker/messages/received", received.to_string()),
        ("$SYS/broker/messages/sent", sent.to_string()),
        ("$SYS/broker/publish/messages/received", received.to_string()),
        ("$SYS/broker/publish/messages/sent", sent.to_string()),
        ("$SYS/broker/publish/messages/dropped", dropped.to_string()),
        ("$SYS/broker/bytes/received", m.bytes_in.to_string()),
        ("$SYS/broker/bytes/sent", m.bytes_out.to_string()),
        ("$SYS/broker/subscriptions/count", m.subscriptions.to_string()),
        ("$SYS/broker/retained messages/count", m.retained_messages.to_string()),
    ]
}

/// Publishes the tree at once, then every `interval`, until the broker is gone. Uptime is
/// measured on the broker's clock.
pub(crate) async fn publish_every(state: Weak<BrokerState>, interval: Duration) {
    let started_ns = match state.upgrade() {
        Some(state) => state.clock.now_ns(),
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        if state.is_shutting_down() {
            return;
        }
        let uptime = Duration::from_nanos(state.clock.now_ns().saturating_sub(started_ns).max(0) as u64);
        for (topic, payload) in tree(&state.metrics_snapshot(), uptime) {
            let message = Message {
                id: state.new_message_id(),
                topic: Arc::from(topic),
                payload: Bytes::from(payload),
                qos: QoS::AtMostOnce,
                retain: true,
                props: None,
                expires_at_ms: None,
                origin_client: None,
                origin_tenant: None,
            };
            state.route(Arc::new(message));
        }
    }
}

/// `$SYS` messages are rebuilt at start, so the retained store keeps them out of the state log.
pub(crate) fn is_sys(topic: &str) -> bool {
    topic.starts_with("$SYS/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_uses_mosquittos_names_and_sums() {
        let m = MetricsSnapshot {
            connections_current: 3,
            sessions: 5,
            messages_in_by_qos: [1, 2, 3],
            messages_out_by_qos: [10, 0, 1],
            dropped_queue_full: 2,
            dropped_expired: 1,
            bytes_in: 100,
            subscriptions: 7,
            ..Default::default()
        };
        let tree: std::collections::HashMap<_, _> = tree(&m, Duration::from_millis(61_500)).into_iter().collect();
        assert_eq!(tree["$SYS/broker/uptime"], "61 seconds");
        assert_eq!(tree["$SYS/broker/clients/connected"], "3");
        assert_eq!(tree["$SYS/broker/clients/disconnected"], "2");
        assert_eq!(tree["$SYS/broker/messages/received"], "6");
        assert_eq!(tree["$SYS/broker/publish/messages/sent"], "11");
        assert_eq!(tree["$SYS/broker/publish/messages/dropped"], "3");
        assert_eq!(tree["$SYS/broker/bytes/received"], "100");
        assert_eq!(tree["$SYS/broker/subscriptions/count"], "7");
        assert!(tree["$SYS/broker/version"].starts_with("corral "));
    }
}
