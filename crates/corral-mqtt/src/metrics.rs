//! Counters the broker keeps for `/metrics`. Rendering (Prometheus) is the binary's job.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::codec::QoS;
use corral_services::metrics::Exposition;

/// The labels of one sample.
type Labels = &'static [(&'static str, &'static str)];

/// The `qos` label of each QoS level.
const QOS: [Labels; 3] = [&[("qos", "0")], &[("qos", "1")], &[("qos", "2")]];

/// Live counters, updated with relaxed atomics on the hot path.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub connections_current: AtomicU64,
    pub connections_total: AtomicU64,
    pub connects_refused: AtomicU64,
    pub messages_in: [AtomicU64; 3],
    pub messages_out: [AtomicU64; 3],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub denied_publish: AtomicU64,
    pub denied_subscribe: AtomicU64,
    pub platform_refused: AtomicU64,
    pub dropped_qos0_backlog: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_expired: AtomicU64,
    pub dropped_too_large: AtomicU64,
    pub dropped_offline_qos0: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub keep_alive_timeouts: AtomicU64,
    pub takeovers: AtomicU64,
    pub session_claims_refused: AtomicU64,
    pub wills_published: AtomicU64,
    pub throttled: AtomicU64,
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

impl Metrics {
    pub fn message_in(&self, qos: QoS) {
        inc(&self.messages_in[qos as usize]);
    }

    pub fn message_out(&self, qos: QoS) {
        inc(&self.messages_out[qos as usize]);
    }

    pub fn snapshot(&self, gauges: Gauges) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        MetricsSnapshot {
            connections_current: g(&self.connections_current),
            connections_total: g(&self.connections_total),
            connects_refused: g(&self.connects_refused),
            sessions: gauges.sessions,
            persistent_sessions: gauges.persistent_sessions,
            retained_messages: gauges.retained_messages,
            subscriptions: gauges.subscriptions,
            pending_wills: gauges.pending_wills,
            messages_in_by_qos: [g(&self.messages_in[0]), g(&self.messages_in[1]), g(&self.messages_in[2])],
            messages_out_by_qos: [g(&self.messages_out[0]), g(&self.messages_out[1]), g(&self.messages_out[2])],
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            denied_publish: g(&self.denied_publish),
            denied_subscribe: g(&self.denied_subscribe),
            platform_publish_refused: g(&self.platform_refused),
            dropped_qos0_backlog: g(&self.dropped_qos0_backlog),
            dropped_queue_full: g(&self.dropped_queue_full),
            dropped_expired: g(&self.dropped_expired),
            dropped_too_large: g(&self.dropped_too_large),
            dropped_offline_qos0: g(&self.dropped_offline_qos0),
            protocol_errors: g(&self.protocol_errors),
            keep_alive_timeouts: g(&self.keep_alive_timeouts),
            takeovers: g(&self.takeovers),
            session_claims_refused: g(&self.session_claims_refused),
            wills_published: g(&self.wills_published),
            publishes_throttled: g(&self.throttled),
        }
    }
}

/// Gauges read from broker state at snapshot time.
pub(crate) struct Gauges {
    pub sessions: u64,
    pub persistent_sessions: u64,
    pub retained_messages: u64,
    pub subscriptions: u64,
    pub pending_wills: u64,
}

/// A point-in-time copy of the broker's counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Gauge: connections past CONNACK right now.
    pub connections_current: u64,
    /// Counter: accepted CONNECTs.
    pub connections_total: u64,
    /// Counter: CONNECTs answered with a failure CONNACK (auth, limits, bad client id).
    pub connects_refused: u64,
    /// Gauge: sessions held (connected or not).
    pub sessions: u64,
    /// Gauge: sessions that outlive their connection.
    pub persistent_sessions: u64,
    /// Gauge.
    pub retained_messages: u64,
    /// Gauge: subscriptions in the trie (shared-group members included).
    pub subscriptions: u64,
    /// Gauge: wills waiting for their delay.
    pub pending_wills: u64,
    /// Counter: PUBLISH received from clients, by QoS.
    pub messages_in_by_qos: [u64; 3],
    /// Counter: PUBLISH sent to clients (first sends, not resends), by QoS.
    pub messages_out_by_qos: [u64; 3],
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Counter: publishes the ACL refused.
    pub denied_publish: u64,
    /// Counter: subscriptions the ACL refused.
    pub denied_subscribe: u64,
    /// Counter: platform publishes `on_platform_publish` refused.
    pub platform_publish_refused: u64,
    /// Counter: QoS 0 messages dropped because a connected client was too far behind.
    pub dropped_qos0_backlog: u64,
    /// Counter: QoS 1/2 messages dropped because a session queue was full.
    pub dropped_queue_full: u64,
    /// Counter: messages dropped because their message expiry interval passed.
    pub dropped_expired: u64,
    /// Counter: messages not sent because they exceed the client's maximum packet size.
    pub dropped_too_large: u64,
    /// Counter: QoS 0 messages for offline sessions (not queued, by design).
    pub dropped_offline_qos0: u64,
    /// Counter: connections closed for malformed packets or protocol errors.
    pub protocol_errors: u64,
    pub keep_alive_timeouts: u64,
    pub takeovers: u64,
    /// Counter: CONNECTs refused because their client id is another principal's session.
    pub session_claims_refused: u64,
    pub wills_published: u64,
    /// Counter: times a client hit its publish rate limit and reading from it paused.
    pub publishes_throttled: u64,
}

impl MetricsSnapshot {
    /// Appends Prometheus text-format lines (`corral_mqtt_*`).
    pub fn render_prometheus(&self, out: &mut String) {
        let mut e = Exposition::new(out);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(Labels, u64)]| {
            let mut family = e.family(&format!("corral_mqtt_{name}"), help, kind);
            for (labels, value) in samples {
                family.sample(labels, value);
            }
        };
        metric("connections", "gauge", "MQTT connections past CONNACK.", &[(&[], self.connections_current)]);
        metric("connects_total", "counter", "Accepted CONNECTs.", &[(&[], self.connections_total)]);
        metric(
            "connects_refused_total",
            "counter",
            "CONNECTs refused (credentials, limits, client id).",
            &[(&[], self.connects_refused)],
        );
        metric(
            "sessions",
            "gauge",
            "Sessions held, connected or not.",
            &[(&[], self.sessions), (&[("persistent", "true")], self.persistent_sessions)],
        );
        metric("retained_messages", "gauge", "Retained messages.", &[(&[], self.retained_messages)]);
        metric("subscriptions", "gauge", "Subscriptions.", &[(&[], self.subscriptions)]);
        let by_qos = |v: [u64; 3]| [(QOS[0], v[0]), (QOS[1], v[1]), (QOS[2], v[2])];
        metric("messages_received_total", "counter", "PUBLISH packets received, by QoS.", &by_qos(self.messages_in_by_qos));
        metric(
            "messages_sent_total",
            "counter",
            "PUBLISH packets sent (not resends), by QoS.",
            &by_qos(self.messages_out_by_qos),
        );
        metric("bytes_received_total", "counter", "Bytes read from MQTT clients.", &[(&[], self.bytes_in)]);
        metric("bytes_sent_total", "counter", "Bytes written to MQTT clients.", &[(&[], self.bytes_out)]);
        metric(
            "denied_total",
            "counter",
            "ACL denials.",
            &[(&[("what", "publish")], self.denied_publish), (&[("what", "subscribe")], self.denied_subscribe)],
        );
        metric(
            "platform_refused_total",
            "counter",
            "Platform publishes refused (bad payload, disk full...).",
            &[(&[], self.platform_publish_refused)],
        );
        metric(
            "dropped_total",
            "counter",
            "Messages not delivered, by cause.",
            &[
                (&[("cause", "qos0_backlog")], self.dropped_qos0_backlog),
                (&[("cause", "queue_full")], self.dropped_queue_full),
                (&[("cause", "expired")], self.dropped_expired),
                (&[("cause", "too_large")], self.dropped_too_large),
                (&[("cause", "offline_qos0")], self.dropped_offline_qos0),
            ],
        );
        metric(
            "protocol_errors_total",
            "counter",
            "Connections closed for malformed packets or protocol errors.",
            &[(&[], self.protocol_errors)],
        );
        metric("keep_alive_timeouts_total", "counter", "Connections closed by keep-alive.", &[(&[], self.keep_alive_timeouts)]);
        metric("takeovers_total", "counter", "Sessions taken over by a new connection.", &[(&[], self.takeovers)]);
        metric(
            "session_claims_refused_total",
            "counter",
            "CONNECTs refused: the client id is a session another credential owns.",
            &[(&[], self.session_claims_refused)],
        );
        metric("wills_published_total", "counter", "Wills published.", &[(&[], self.wills_published)]);
        metric("throttled_total", "counter", "Times a client hit its publish rate limit.", &[(&[], self.publishes_throttled)]);
    }
}
