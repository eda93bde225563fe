//! The broker's shared state and the session lifecycle: attach on CONNECT (new, resumed or taken
//! over), detach on disconnect, subscribe/unsubscribe, expiry, and the snapshot capture.
//!
//! Lock order (never reversed, never held across an await): persist gate → sessions map →
//! one session → trie/retained/receipt listeners. Routing takes the trie read lock, releases it, then locks each
//! target session in turn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use corral_services::Clock;
use tokio::sync::{Notify, watch};

use crate::codec::{ProtocolVersion, ReasonCode};
use crate::config::BrokerConfig;
use crate::hooks::{BrokerHooks, DisconnectKind, Identity};
use crate::message::Outgoing;
use crate::metrics::{self, Gauges, Metrics, MetricsSnapshot};
use crate::persist::{Op, Persist, RecoveredSession, RouteTarget, StateCapture};
use crate::retained::RetainedStore;
use crate::session::{Inflight, Kick, Phase, Session, Subscription};
use crate::trie::{Subscriber, SubscriptionTrie};
use crate::will::PendingWills;

/// Everything connections share. Lives as long as the `Broker` handles and connection tasks.
pub(crate) struct BrokerState {
    pub config: BrokerConfig,
    pub hooks: Arc<dyn BrokerHooks>,
    /// The time offline sessions expire and delayed wills fall due by (`Broker::with_clock`);
    /// protocol timers (keep-alive, rate limit, timeouts) run on tokio time instead.
    pub clock: Arc<dyn Clock>,
    pub sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    pub trie: RwLock<SubscriptionTrie>,
    pub retained: RwLock<RetainedStore>,
    pub persist: Option<Persist>,
    pub metrics: Metrics,
    pub wills: PendingWills,
    pub next_msg_id: AtomicU64,
    pub next_generation: AtomicU64,
    /// Flips to true on shutdown; connections and listeners watch it.
    pub shutdown: watch::Sender<bool>,
    /// Connection tasks alive (handshake included), to wait for them on shutdown.
    pub live_tasks: AtomicUsize,
    pub all_tasks_done: Notify,
    /// Back-reference for work that must outlive a borrow (spawned will publishes).
    pub me: std::sync::Weak<BrokerState>,
    /// In-process listeners on topic filters (other doors that deliver commands).
    pub taps: RwLock<Vec<crate::tap::Tap>>,
    /// What each tenant's sessions have queued, together (see `queue.rs`).
    pub tenant_shares: crate::queue::TenantShares,
    /// Listeners for delivery receipts (see `receipts.rs`).
    pub receipts: crate::receipts::Receipts,
}

/// What `attach` did with an existing session.
pub(crate) struct Attached {
    pub session: Arc<Session>,
    pub session_present: bool,
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl BrokerState {
    pub fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn self_ref(&self) -> Option<Arc<BrokerState>> {
        self.me.upgrade()
    }

    /// The counters and gauges of `/metrics` (and `$SYS`) now.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        let (sessions, persistent) = {
            let sessions = self.sessions();
            let persistent = sessions.values().filter(|s| s.is_persistent()).count();
            (sessions.len() as u64, persistent as u64)
        };
        self.metrics.snapshot(Gauges {
            sessions,
            persistent_sessions: persistent,
            retained_messages: read(&self.retained).len() as u64,
            subscriptions: read(&self.trie).len() as u64,
            pending_wills: self.wills.len() as u64,
        })
    }

    pub fn new_message_id(&self) -> u64 {
        self.next_msg_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The persist handle if `session`'s changes must be logged.
    pub fn persist_for(&self, session: &Session) -> Option<&Persist> {
        self.persist.as_ref().filter(|_| session.is_persistent())
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Binds a new connection (`generation`) to the session of `client_id`: takes it over from
    /// a live connection, resumes it, or replaces it with a fresh one (clean start, expired).
    /// `None` when another principal owns that session (see [`claim`]): the CONNECT is refused.
    pub fn attach(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry_secs: u32,
        protocol: ProtocolVersion,
        identity: &Arc<Identity>,
        generation: u64,
    ) -> Option<Attached> {
        let mut ended_will = None;
        let attached = self.attach_locked(client_id, clean_start, expiry_secs, protocol, identity, generation, &mut ended_will);
        // Published with no lock held: routing takes the gate and session locks itself.
        if let Some(will) = ended_will {
            self.publish_will(will.message, &will.identity);
        }
        attached
    }

    #[allow(clippy::too_many_arguments)]
    fn attach_locked(
        &self,
        client_id: &Arc<str>,
        mut clean_start: bool,
        expiry_secs: u32,
        protocol: ProtocolVersion,
        identity: &Arc<Identity>,
        generation: u64,
        ended_will: &mut Option<crate::will::PendingWill>,
    ) -> Option<Attached> {
        let _gate = self.persist.as_ref().map(Persist::gate);
        let mut sessions = self.sessions();
        let principal: Arc<str> = Arc::from(identity.principal());
        if let Some(old) = sessions.get(client_id).cloned() {
            match claim(&old.owner, &principal, identity, client_id) {
                Claim::Resume => {}
                // The device's own id: whatever another principal left there ends, unseen.
                Claim::Replace => clean_start = true,
                Claim::Refuse => {
                    metrics::inc(&self.metrics.session_claims_refused);
                    return None;
                }
            }
            let mut st = old.lock();
            let expired = st.owner == 0 && st.expired(self.clock.now_ns());
            if st.owner != 0 {
                // Tell the current owner to leave: DISCONNECT 0x8E.
                st.kick = Some((
                    st.owner,
                    Kick {
                        reason: ReasonCode::SESSION_TAKEN_OVER,
                        kind: DisconnectKind::Takeover,
                        session_continues: !clean_start,
                    },
                ));
                old.wake.notify_one();
                metrics::inc(&self.metrics.takeovers);
            }
            if !clean_start && !expired {
                let was_persistent = old.is_persistent();
                st.owner = generation;
                st.expiry_secs = expiry_secs;
                st.protocol = protocol;
                st.identity = Some(identity.clone());
                st.queue.count_in(self.share_of(identity));
                st.disconnected_at_ns = None;
                old.persistent.store(expiry_secs > 0, Ordering::Release);
                old.online.store(true, Ordering::Release);
                if let Some(p) = &self.persist {
                    if expiry_secs > 0 {
                        p.log(&Op::SessionUpsert {
                            client_id: client_id.clone(),
                            expiry_secs,
                            protocol,
                            owner: old.owner.clone(),
                        });
                    } else if was_persistent {
                        p.log(&Op::SessionDelete { client_id: client_id.clone() });
                    }
                }
                self.refresh_subscriptions(&old, &mut st, identity);
                self.wills.cancel(client_id);
                drop(st);
                return Some(Attached { session: old, session_present: true });
            }
            // The old session ends here.
            st.owner = 0;
            old.online.store(false, Ordering::Release);
            self.forget_locked(&old, &mut st);
            drop(st);
            sessions.remove(client_id);
            *ended_will = self.wills.take(client_id);
        }
        let session = Arc::new(Session::new(client_id.clone(), principal.clone(), protocol, expiry_secs));
        {
            let mut st = session.lock();
            st.owner = generation;
            st.identity = Some(identity.clone());
            st.queue.count_in(self.share_of(identity));
        }
        session.online.store(true, Ordering::Release);
        if expiry_secs > 0
            && let Some(p) = &self.persist
        {
            p.log(&Op::SessionUpsert { client_id: client_id.clone(), expiry_secs, protocol, owner: principal });
        }
        sessions.insert(client_id.clone(), session.clone());
        Some(Attached { session, session_present: false })
    }

    /// The tenant share the queue of `who`'s session counts in; none for unscoped principals.
    fn share_of(&self, who: &Identity) -> Option<crate::queue::Share> {
        who.tenant().map(|tenant| self.tenant_shares.of(tenant))
    }

    /// Re-applies the ACL and tenant scope of the (possibly changed) identity to a resumed
    /// session's subscriptions.
    fn refresh_subscriptions(&self, session: &Arc<Session>, st: &mut crate::session::SessionState, who: &Identity) {
        let audience = crate::acl::Audience::of(who);
        let persist = self.persist_for(session);
        let mut trie = write(&self.trie);
        st.subscriptions.retain(|filter, sub| {
            let inner = crate::topic::parse_shared(filter).map_or(filter.as_str(), |(_, f)| f);
            if !crate::acl::may_subscribe(who, inner) {
                trie.remove(filter, &session.client_id);
                if let Some(p) = persist {
                    p.log(&Op::Unsubscribe { client_id: session.client_id.clone(), filter: filter.clone() });
                }
                return false;
            }
            if sub.audience != audience {
                sub.audience = audience.clone();
                trie.insert(
                    filter,
                    Subscriber { session: session.clone(), options: sub.options, id: sub.id, audience: audience.clone() },
                );
                if let Some(p) = persist {
                    p.log(&Op::Subscribe {
                        client_id: session.client_id.clone(),
                        filter: filter.clone(),
                        subscription: sub.clone(),
                    });
                }
            }
            true
        });
    }

    /// Removes the session's subscriptions and queued state; logs the deletion if it was durable.
    fn forget_locked(&self, session: &Arc<Session>, st: &mut crate::session::SessionState) {
        {
            let mut trie = write(&self.trie);
            for filter in st.subscriptions.keys() {
                trie.remove(filter, &session.client_id);
            }
        }
        st.subscriptions.clear();
        st.queue.clear();
        st.inflight.clear();
        st.inbound_qos2.clear();
        if session.persistent.swap(false, Ordering::AcqRel)
            && let Some(p) = &self.persist
        {
            p.log(&Op::SessionDelete { client_id: session.client_id.clone() });
        }
    }

    /// The connection `generation` ended: the session goes offline (persistent) or away.
    pub fn detach(&self, session: &Arc<Session>, generation: u64) {
        let _gate = self.persist.as_ref().map(Persist::gate);
        let mut sessions = self.sessions();
        let mut st = session.lock();
        if !st.owned_by(generation) {
            return; // taken over or replaced meanwhile
        }
        st.owner = 0;
        st.kick = None;
        st.disconnected_at_ns = Some(self.clock.now_ns());
        session.online.store(false, Ordering::Release);
        if st.expiry_secs == 0 {
            self.forget_locked(session, &mut st);
            drop(st);
            if sessions.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, session)) {
                sessions.remove(&session.client_id);
            }
        } else {
            // QoS 0 is not kept for offline sessions.
            st.queue.retain(|o| o.qos != crate::codec::QoS::AtMostOnce);
        }
    }

    /// Drops offline sessions whose expiry passed; publishes the wills their end releases.
    pub fn expire_sessions(&self) {
        let _gate = self.persist.as_ref().map(Persist::gate);
        let mut sessions = self.sessions();
        let mut ended = Vec::new();
        let now_ns = self.clock.now_ns();
        sessions.retain(|client_id, session| {
            let mut st = session.lock();
            let gone = st.owner == 0 && st.expired(now_ns);
            if gone {
                self.forget_locked(session, &mut st);
                ended.push(client_id.clone());
            }
            !gone
        });
        drop(sessions);
        drop(_gate);
        for client_id in ended {
            tracing::debug!(client_id = %client_id, "session expired");
            if let Some(will) = self.wills.take(&client_id) {
                self.publish_will(will.message, &will.identity);
            }
        }
    }

    /// Adds or replaces a subscription; returns true if it existed before.
    pub fn subscribe(&self, session: &Arc<Session>, generation: u64, filter: &str, sub: Subscription) -> bool {
        let persist = self.persist_for(session);
        let _gate = persist.map(Persist::gate);
        let mut st = session.lock();
        if !st.owned_by(generation) {
            return false;
        }
        let existed = st.subscriptions.insert(filter.to_owned(), sub.clone()).is_some();
        write(&self.trie).insert(
            filter,
            Subscriber { session: session.clone(), options: sub.options, id: sub.id, audience: sub.audience.clone() },
        );
        if let Some(p) = persist {
            p.log(&Op::Subscribe { client_id: session.client_id.clone(), filter: filter.to_owned(), subscription: sub });
        }
        existed
    }

    /// Removes a subscription; returns true if there was one.
    pub fn unsubscribe(&self, session: &Arc<Session>, generation: u64, filter: &str) -> bool {
        let persist = self.persist_for(session);
        let _gate = persist.map(Persist::gate);
        let mut st = session.lock();
        if !st.owned_by(generation) || st.subscriptions.remove(filter).is_none() {
            return false;
        }
        write(&self.trie).remove(filter, &session.client_id);
        if let Some(p) = persist {
            p.log(&Op::Unsubscribe { client_id: session.client_id.clone(), filter: filter.to_owned() });
        }
        true
    }

    /// Installs sessions recovered from disk (offline, their expiry counting from now).
    pub fn install_recovered(&self, recovered: HashMap<Arc<str>, RecoveredSession>) {
        let mut sessions = self.sessions();
        let mut trie = write(&self.trie);
        let now_ns = self.clock.now_ns();
        for (client_id, rec) in recovered {
            let session = Arc::new(Session::new(client_id.clone(), rec.owner.clone(), rec.protocol, rec.expiry_secs));
            {
                let mut st = session.lock();
                st.disconnected_at_ns = Some(now_ns);
                st.inbound_qos2 = rec.inbound_qos2;
                for (filter, sub) in rec.subscriptions {
                    trie.insert(
                        &filter,
                        Subscriber { session: session.clone(), options: sub.options, id: sub.id, audience: sub.audience.clone() },
                    );
                    st.subscriptions.insert(filter, sub);
                }
                for (_, m) in rec.messages {
                    match m.packet_id {
                        Some(pid) => {
                            let phase = match (m.out.qos, m.released) {
                                (_, true) => Phase::AwaitPubComp,
                                (crate::codec::QoS::ExactlyOnce, false) => Phase::AwaitPubRec,
                                _ => Phase::AwaitPubAck,
                            };
                            st.inflight.insert(pid, Inflight { out: m.out, phase });
                        }
                        None => st.queue.push_back(m.out),
                    }
                }
            }
            sessions.insert(client_id, session);
        }
    }

    /// Logs `out` for a persistent session (call with the gate held, before queueing it).
    pub fn log_route_one(&self, persist: &Persist, session: &Session, out: &Outgoing) {
        persist.log(&Op::Route {
            message: out.message.clone(),
            targets: vec![RouteTarget {
                client_id: session.client_id.clone(),
                qos: out.qos,
                retain: out.retain,
                subscription_ids: out.subscription_ids.clone(),
            }],
        });
    }

    /// Finds the online session of `client_id`-independent identities and asks them to leave.
    pub fn kick_where(&self, reason: ReasonCode, pred: &dyn Fn(&Identity) -> bool) -> usize {
        let sessions: Vec<Arc<Session>> = self.sessions().values().cloned().collect();
        let mut kicked = 0;
        for session in sessions {
            let mut st = session.lock();
            if st.owner == 0 || !st.identity.as_deref().is_some_and(pred) {
                continue;
            }
            st.kick = Some((st.owner, Kick { reason, kind: DisconnectKind::Kicked, session_continues: false }));
            drop(st);
            session.wake.notify_one();
            kicked += 1;
        }
        kicked
    }
}

/// What a connecting principal may do with an existing session of its client id.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// Its own session: take it over from a live connection, or resume it.
    Resume,
    /// A device connecting under its own id, where another principal left a session: that
    /// session ends (nothing of it is handed over) and the device starts a fresh one.
    Replace,
    /// Someone else's session: the CONNECT is refused, the session and its connection stay.
    Refuse,
}

/// Sessions are owned by the principal that created them, so a client id can never be used to
/// disconnect, or read the queued messages of, another credential's session. A session from a
/// log written before owners were recorded (empty owner) is resumed by the device of that id;
/// anyone else starts it afresh, so nothing queued in it is handed to a stranger.
fn claim(owner: &str, principal: &str, who: &Identity, client_id: &str) -> Claim {
    let own_device_id = matches!(who, Identity::Device { id, .. } if id == client_id);
    if owner == principal || (owner.is_empty() && own_device_id) {
        Claim::Resume
    } else if own_device_id || owner.is_empty() {
        Claim::Replace
    } else {
        Claim::Refuse
    }
}

impl StateCapture for BrokerState {
    fn capture(&self) -> Vec<Op> {
        let sessions: Vec<Arc<Session>> = self.sessions().values().cloned().collect();
        let mut ops = Vec::new();
        for session in sessions {
            if !session.is_persistent() {
                continue;
            }
            let st = session.lock();
            let client_id = session.client_id.clone();
            ops.push(Op::SessionUpsert {
                client_id: client_id.clone(),
                expiry_secs: st.expiry_secs,
                protocol: st.protocol,
                owner: session.owner.clone(),
            });
            for (filter, sub) in &st.subscriptions {
                ops.push(Op::Subscribe { client_id: client_id.clone(), filter: filter.clone(), subscription: sub.clone() });
            }
            let target = |out: &Outgoing| RouteTarget {
                client_id: client_id.clone(),
                qos: out.qos,
                retain: out.retain,
                subscription_ids: out.subscription_ids.clone(),
            };
            // In-flight first: they were routed before anything still queued.
            for (&packet_id, inflight) in &st.inflight {
                let msg_id = inflight.out.message.id;
                ops.push(Op::Route { message: inflight.out.message.clone(), targets: vec![target(&inflight.out)] });
                ops.push(Op::Sent { client_id: client_id.clone(), msg_id, packet_id });
                if inflight.phase == Phase::AwaitPubComp {
                    ops.push(Op::Released { client_id: client_id.clone(), msg_id });
                }
            }
            for out in st.queue.iter().filter(|o| o.qos != crate::codec::QoS::AtMostOnce) {
                ops.push(Op::Route { message: out.message.clone(), targets: vec![target(out)] });
            }
            for &packet_id in &st.inbound_qos2 {
                ops.push(Op::InboundQos2 { client_id: client_id.clone(), packet_id, stored: true });
            }
        }
        for message in read(&self.retained).all() {
            ops.push(Op::RetainSet { message });
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Role;

    fn app(principal: &str) -> Identity {
        Identity::Application { name: "app".into(), principal: principal.into(), role: Role::Viewer, tenant: Some("acme".into()) }
    }

    /// Regression (tenant isolation): an acme viewer token with client id `globex-d2` took over
    /// that device's live session and resumed its queued command.
    #[test]
    fn only_the_principal_that_created_a_session_resumes_it() {
        let device = Identity::Device { id: "globex-d2".into(), tenant: "globex".into(), children: vec![] };
        let device_owner = device.principal();
        assert_eq!(claim(&device_owner, &app("token:7").principal(), &app("token:7"), "globex-d2"), Claim::Refuse);
        assert_eq!(claim(&device_owner, &device_owner, &device, "globex-d2"), Claim::Resume);
        let app_owner = app("token:7").principal();
        assert_eq!(claim(&app_owner, &app_owner, &app("token:7"), "dashboard"), Claim::Resume);
        assert_eq!(claim(&app_owner, &app("token:8").principal(), &app("token:8"), "dashboard"), Claim::Refuse);
        // A device always gets its own id back; nothing of the squatter's session goes with it.
        assert_eq!(claim(&Identity::Anonymous.principal(), &device_owner, &device, "globex-d2"), Claim::Replace);
        // Sessions from before owners were recorded.
        assert_eq!(claim("", &device_owner, &device, "globex-d2"), Claim::Resume);
        assert_eq!(claim("", &app_owner, &app("token:7"), "globex-d2"), Claim::Replace);
    }
}
