//! Broker limits and knobs. The binary maps its own (serde) config onto [`BrokerConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::error::BrokerError;

/// What to do when a session's queue of undelivered QoS 1/2 messages is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOverflow {
    /// Drop the oldest queued message to make room (fresh data wins; default).
    DropOldest,
    /// Drop the new message.
    DropNew,
}

/// Per-client publish rate limit (token bucket). Exceeding it throttles: the broker stops
/// reading from that client until tokens refill, so TCP back-pressure slows the publisher
/// without disconnecting it and without affecting other clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub messages_per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where persistent sessions and retained messages live (e.g. `<data>/mqtt`). `None` keeps
    /// everything in memory (tests, ephemeral brokers).
    pub data_dir: Option<PathBuf>,
    /// Open mode: a CONNECT without user name becomes [`Identity::Anonymous`](crate::Identity)
    /// instead of going to `authenticate`. Default off.
    pub allow_anonymous: bool,
    /// Largest packet accepted (and announced to v5 clients). Default 1 MiB.
    pub max_packet_size: u32,
    /// A connection that sends no CONNECT within this time is closed. Default 10 s.
    pub connect_timeout: Duration,
    /// Connections beyond this get CONNACK "quota exceeded" (v5) / "server unavailable" (3.1.1).
    /// Default 100 000.
    pub max_connections: usize,
    /// Receive Maximum announced to v5 clients: QoS 1/2 publishes a client may have unacknowledged
    /// (exceeding it → DISCONNECT 0x93). Default 128.
    pub receive_maximum: u16,
    /// Most QoS 1/2 messages in flight to one client (lowered by a v5 client's Receive Maximum).
    /// Default 128.
    pub max_inflight: u16,
    /// Most undelivered messages a session queues (offline or slow). Default 1000.
    pub max_queued_messages: usize,
    /// Most undelivered messages the sessions of one tenant queue together (see `queue.rs`),
    /// so one tenant's sessions cannot take the broker's memory from the others. Default
    /// 1 000 000.
    pub max_queued_per_tenant: usize,
    pub queue_overflow: QueueOverflow,
    /// Overlapping subscriptions of one session: a copy per matching subscription, each at its
    /// own QoS (Mosquitto's behaviour), instead of the single copy MQTT 5 §3.3.4 and 3.1.1
    /// §3.3.5 ask for. Default false.
    pub copy_per_subscription: bool,
    /// How often the `$SYS/broker/…` tree is published (see `sys.rs`); `None` publishes none.
    /// Default 10 s, as Mosquitto's `sys_interval`.
    pub sys_interval: Option<Duration>,
    /// When a connected client's backlog reaches this many messages, new QoS 0 messages to it
    /// are dropped (counted) instead of queued. Default 10 000 (absorbs bursts from fast
    /// publishers; ~50 bytes per queued copy plus the shared message).
    pub max_qos0_backlog: usize,
    /// Topic Alias Maximum announced to v5 clients (aliases a client may use towards us).
    /// Default 64.
    pub topic_alias_maximum: u16,
    /// Upper bound on keep-alive; a client asking for more (or for none) gets this value
    /// as v5 Server Keep Alive. `None` = accept the client's. Default `None`.
    pub max_keep_alive_secs: Option<u16>,
    /// Default `None` (unlimited).
    pub publish_rate_limit: Option<RateLimit>,
    /// A write to a client that makes no progress for this long closes the connection.
    /// Default 30 s.
    pub write_timeout: Duration,
    /// State log operations between two snapshots (compaction). Default 100 000.
    pub snapshot_every_ops: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: None,
            allow_anonymous: false,
            max_packet_size: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            receive_maximum: 128,
            max_inflight: 128,
            max_queued_messages: 1000,
            max_queued_per_tenant: 1_000_000,
            queue_overflow: QueueOverflow::DropOldest,
            copy_per_subscription: false,
            sys_interval: Some(Duration::from_secs(10)),
            max_qos0_backlog: 10_000,
            topic_alias_maximum: 64,
            max_keep_alive_secs: None,
            publish_rate_limit: None,
            write_timeout: Duration::from_secs(30),
            snapshot_every_ops: 100_000,
        }
    }
}

impl BrokerConfig {
    pub fn validate(&self) -> Result<(), BrokerError> {
        let fail = |m: &str| Err(BrokerError::Config(m.to_owned()));
        if self.max_packet_size < 64 || self.max_packet_size > crate::codec::MAX_VARINT + 5 {
            return fail("max_packet_size must be between 64 bytes and 256 MiB");
        }
        if self.receive_maximum == 0 || self.max_inflight == 0 {
            return fail("receive_maximum and max_inflight must be at least 1");
        }
        if self.max_queued_messages == 0 || self.max_queued_per_tenant == 0 {
            return fail("max_queued_messages and max_queued_per_tenant must be at least 1");
        }
        if self.max_keep_alive_secs == Some(0) {
            return fail("max_keep_alive_secs must be at least 1 (or unset)");
        }
        if let Some(limit) = self.publish_rate_limit
            && (limit.messages_per_second == 0 || limit.burst == 0)
        {
            return fail("publish_rate_limit needs messages_per_second and burst of at least 1");
        }
        if self.connect_timeout.is_zero() || self.write_timeout.is_zero() {
            return fail("connect_timeout and write_timeout must be positive");
        }
        Ok(())
    }
}
