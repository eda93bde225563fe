//! A client session: subscriptions, messages waiting to be sent, messages in flight, and QoS 2
//! packet ids received but not yet released. Outlives its connection when persistent.
//!
//! Every message for a client goes through its session queue, whether the client is online (its
//! connection task is woken and drains the queue into the inflight window) or offline (the queue
//! waits for the next connection). One mutex per session keeps the publish path free of a global
//! lock: a publisher locks only the sessions it delivers to, briefly, and never across an await.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::codec::{ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};
use crate::config::{BrokerConfig, QueueOverflow};
use crate::hooks::{DisconnectKind, Identity};
use crate::message::Outgoing;
use crate::queue::Queue;

/// Dropped when the broker forgets the session (clean start, expiry) and no connection holds it.
#[derive(Debug)]
pub(crate) struct Session {
    pub client_id: Arc<str>,
    /// [`Identity::principal`] of whoever created the session; empty for a session recovered
    /// from a state log written before owners were recorded.
    pub owner: Arc<str>,
    /// A connection currently owns the session (read lock-free by routing and shared groups).
    pub online: AtomicBool,
    /// The session outlives its connection (expiry > 0); its QoS 1/2 traffic is logged.
    pub persistent: AtomicBool,
    /// Wakes the owning connection: new messages, or a kick.
    pub wake: Notify,
    state: Mutex<SessionState>,
}

/// One subscription as the session remembers it (the trie holds the routing copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
    pub audience: crate::acl::Audience,
}

/// Where an outbound QoS 1/2 message is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the packet awaited
pub(crate) enum Phase {
    /// QoS 1 PUBLISH sent.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent.
    AwaitPubRec,
    /// PUBREL sent.
    AwaitPubComp,
}

#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    pub out: Outgoing,
    pub phase: Phase,
}

/// A request for the owning connection to leave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kick {
    pub reason: ReasonCode,
    pub kind: DisconnectKind,
    /// The session continues under the new owner (takeover without clean start): a delayed
    /// will is then cancelled rather than published.
    pub session_continues: bool,
}

#[derive(Debug)]
pub(crate) struct SessionState {
    /// Generation of the connection owning the session; 0 = none.
    pub owner: u64,
    /// A request for the connection of that generation to leave.
    pub kick: Option<(u64, Kick)>,
    pub expiry_secs: u32,
    pub protocol: ProtocolVersion,
    pub identity: Option<Arc<Identity>>,
    /// Keyed by the full filter as subscribed (`$share/...` included).
    pub subscriptions: HashMap<String, Subscription>,
    pub queue: Queue,
    pub inflight: BTreeMap<u16, Inflight>,
    /// QoS 2 packet ids received and PUBREC'd, awaiting PUBREL (exactly-once inbound).
    pub inbound_qos2: HashSet<u16>,
    next_packet_id: u16,
    /// When the last connection left (Unix ns, by the broker's clock); `None` while one owns it.
    pub disconnected_at_ns: Option<i64>,
}

/// What happened to a message offered to a session queue.
#[derive(Debug)]
pub(crate) enum Enqueued {
    Queued,
    /// QoS 0 to an offline session: not kept (QoS 0 promises nothing).
    OfflineQos0,
    /// QoS 0 while the client is too far behind.
    Qos0Backlog,
    /// The queue was full: this message (the new one or the oldest) was dropped.
    Dropped(Outgoing),
}

impl Session {
    pub fn new(client_id: Arc<str>, owner: Arc<str>, protocol: ProtocolVersion, expiry_secs: u32) -> Self {
        Session {
            client_id,
            owner,
            online: AtomicBool::new(false),
            persistent: AtomicBool::new(expiry_secs > 0),
            wake: Notify::new(),
            state: Mutex::new(SessionState {
                owner: 0,
                kick: None,
                expiry_secs,
                protocol,
                identity: None,
                subscriptions: HashMap::new(),
                queue: Queue::default(),
                inflight: BTreeMap::new(),
                inbound_qos2: HashSet::new(),
                next_packet_id: 0,
                disconnected_at_ns: None,
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        // A panic elsewhere must not take every later publish down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    pub fn is_persistent(&self) -> bool {
        self.persistent.load(Ordering::Acquire)
    }

    /// Queues `out` and wakes the connection if there is one.
    pub fn deliver(&self, out: Outgoing, config: &BrokerConfig) -> Enqueued {
        let online = self.is_online();
        let result = self.lock().enqueue(out, config, online);
        if online && matches!(result, Enqueued::Queued | Enqueued::Dropped(_)) {
            self.wake.notify_one();
        }
        result
    }
}

impl SessionState {
    /// Whether the session, offline since `disconnected_at_ns`, outlived its expiry at `now_ns`
    /// (`u32::MAX`: never expires).
    pub fn expired(&self, now_ns: i64) -> bool {
        let Some(since_ns) = self.disconnected_at_ns else { return false };
        let expiry_ns = i64::from(self.expiry_secs).saturating_mul(1_000_000_000);
        self.expiry_secs != u32::MAX && now_ns.saturating_sub(since_ns) >= expiry_ns
    }

    pub fn enqueue(&mut self, out: Outgoing, config: &BrokerConfig, online: bool) -> Enqueued {
        if out.qos == QoS::AtMostOnce {
            if !online {
                return Enqueued::OfflineQos0;
            }
            if self.queue.len() >= config.max_qos0_backlog || self.queue.share_full(config.max_queued_per_tenant) {
                return Enqueued::Qos0Backlog;
            }
            self.queue.push_back(out);
            return Enqueued::Queued;
        }
        if self.queue.len() >= config.max_queued_messages || self.queue.share_full(config.max_queued_per_tenant) {
            // Fresh data wins only within the session's own queue: a session whose tenant's
            // share is full but that holds nothing itself drops the new message.
            if matches!(config.queue_overflow, QueueOverflow::DropOldest)
                && let Some(oldest) = self.queue.pop_front()
            {
                self.queue.push_back(out);
                return Enqueued::Dropped(oldest);
            }
            return Enqueued::Dropped(out);
        }
        self.queue.push_back(out);
        Enqueued::Queued
    }

    /// A packet id not used by any message in flight (never 0).
    pub fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id != 0 && !self.inflight.contains_key(&self.next_packet_id) {
                return self.next_packet_id;
            }
        }
    }

    /// Does a connection of generation `generation` still own this session?
    pub fn owned_by(&self, generation: u64) -> bool {
        self.owner == generation && generation != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn out(id: u64, qos: QoS) -> Outgoing {
        Outgoing {
            message: Arc::new(Message {
                id,
                topic: Arc::from("t"),
                payload: bytes::Bytes::new(),
                qos,
                retain: false,
                props: None,
                expires_at_ms: None,
                origin_client: None,
                origin_tenant: None,
            }),
            qos,
            retain: false,
            subscription_ids: vec![],
        }
    }

    /// Regression (tenant isolation): one tenant's sessions, each within its own bound, must not
    /// queue without end together.
    #[test]
    fn a_tenants_sessions_share_one_bound() {
        let config = BrokerConfig { max_queued_messages: 10, max_queued_per_tenant: 3, ..Default::default() };
        let shares = crate::queue::TenantShares::default();
        let session = |tenant: &str| {
            let s = Session::new(Arc::from("c"), Arc::from("anonymous"), ProtocolVersion::V5, 60);
            s.lock().queue.count_in(Some(shares.of(tenant)));
            s
        };
        let (a1, a2, b1) = (session("acme"), session("acme"), session("beta"));
        for id in 1..=2 {
            assert!(matches!(a1.lock().enqueue(out(id, QoS::AtLeastOnce), &config, false), Enqueued::Queued));
        }
        assert!(matches!(a2.lock().enqueue(out(3, QoS::AtLeastOnce), &config, false), Enqueued::Queued));
        // acme's share is full: a2 keeps its freshest, a session holding nothing drops the new one.
        assert!(matches!(a2.lock().enqueue(out(4, QoS::AtLeastOnce), &config, false), Enqueued::Dropped(o) if o.message.id == 3));
        let a3 = session("acme");
        assert!(matches!(a3.lock().enqueue(out(5, QoS::AtLeastOnce), &config, false), Enqueued::Dropped(o) if o.message.id == 5));
        // Another tenant is not affected.
        assert!(matches!(b1.lock().enqueue(out(6, QoS::AtLeastOnce), &config, false), Enqueued::Queued));
        // Delivered or forgotten messages give their place back.
        a1.lock().queue.pop_front();
        drop(a2);
        assert_eq!(shares.of("acme").load(Ordering::Relaxed), 1);
        assert!(matches!(a3.lock().enqueue(out(7, QoS::AtLeastOnce), &config, false), Enqueued::Queued));
    }

    #[test]
    fn queue_limits_and_overflow_policies() {
        let mut config = BrokerConfig { max_queued_messages: 2, max_qos0_backlog: 1, ..Default::default() };
        let s = Session::new(Arc::from("c"), Arc::from("anonymous"), ProtocolVersion::V5, 10);
        let mut st = s.lock();
        assert!(matches!(st.enqueue(out(1, QoS::AtMostOnce), &config, false), Enqueued::OfflineQos0));
        assert!(matches!(st.enqueue(out(1, QoS::AtMostOnce), &config, true), Enqueued::Queued));
        assert!(matches!(st.enqueue(out(2, QoS::AtMostOnce), &config, true), Enqueued::Qos0Backlog));
        assert!(matches!(st.enqueue(out(3, QoS::AtLeastOnce), &config, true), Enqueued::Queued));
        match st.enqueue(out(4, QoS::AtLeastOnce), &config, true) {
            Enqueued::Dropped(old) => assert_eq!(old.message.id, 1),
            other => panic!("{other:?}"),
        }
        config.queue_overflow = QueueOverflow::DropNew;
        match st.enqueue(out(5, QoS::ExactlyOnce), &config, true) {
            Enqueued::Dropped(new) => assert_eq!(new.message.id, 5),
            other => panic!("{other:?}"),
        }
        let ids: Vec<u64> = st.queue.iter().map(|o| o.message.id).collect();
        assert_eq!(ids, [3, 4]);
    }

    #[test]
    fn packet_ids_skip_zero_and_inflight() {
        let s = Session::new(Arc::from("c"), Arc::from("anonymous"), ProtocolVersion::V5, 0);
        let mut st = s.lock();
        st.next_packet_id = u16::MAX - 1;
        st.inflight.insert(u16::MAX, Inflight { out: out(1, QoS::AtLeastOnce), phase: Phase::AwaitPubAck });
        st.inflight.insert(1, Inflight { out: out(2, QoS::AtLeastOnce), phase: Phase::AwaitPubAck });
        assert_eq!(st.next_packet_id(), 2);
    }
}
