//! Routing a message: retained store, subscription matching, per-session aggregation of
//! overlapping subscriptions, queueing, and the log ops that make it durable.

use std::sync::Arc;

use crate::codec::{QoS, RetainHandling};
use crate::hooks::Identity;
use crate::message::{Message, Outgoing};
use crate::metrics;
use crate::persist::{Op, Persist, RouteTarget};
use crate::receipts::Recipient;
use crate::session::{Enqueued, Session, Subscription};
use crate::state::{BrokerState, read, write};
use crate::trie::Subscriber;

impl BrokerState {
    /// Routes `msg` to every matching subscription (and the retained store if flagged).
    /// Returns true if it logged durable state, i.e. a QoS 1/2 acknowledgement must wait for
    /// [`Persist::barrier`].
    pub fn route(&self, msg: Arc<Message>) -> bool {
        self.route_to(msg, None)
    }

    /// [`route`](Self::route), telling `recipients` which sessions queued a copy.
    pub fn route_to(&self, msg: Arc<Message>, mut recipients: Option<&mut Vec<Recipient>>) -> bool {
        crate::tap::offer(&read(&self.taps), &msg);
        let mut logged = false;
        if msg.retain {
            logged |= self.store_retained(&msg);
        }
        let mut matched: Vec<(Arc<Session>, crate::codec::SubscriptionOptions, Option<u32>)> = Vec::new();
        {
            let accept = |s: &Subscriber| {
                !(s.options.no_local && msg.origin_client.as_ref() == Some(&s.session.client_id))
                    && s.audience.receives(&msg.topic, &msg.origin_tenant)
            };
            read(&self.trie).for_each_match(&msg.topic, &accept, &mut |s| {
                matched.push((s.session.clone(), s.options, s.id));
            });
        }
        if matched.is_empty() {
            return logged;
        }
        // Overlapping subscriptions of one session: one delivery with the highest QoS and every
        // subscription identifier (MQTT 5 §3.3.4), unless configured to copy per subscription.
        let single_copy = !self.config.copy_per_subscription;
        if matched.len() > 1 && single_copy {
            matched.sort_by_key(|(s, _, _)| Arc::as_ptr(s) as usize);
        }
        let mut deliveries: Vec<(Arc<Session>, Outgoing)> = Vec::with_capacity(matched.len());
        for (session, options, id) in matched {
            if single_copy
                && let Some((last, out)) = deliveries.last_mut()
                && Arc::ptr_eq(last, &session)
            {
                out.qos = out.qos.max(options.qos.min(msg.qos));
                out.retain |= options.retain_as_published && msg.retain;
                out.subscription_ids.extend(id);
                continue;
            }
            let out = Outgoing {
                message: msg.clone(),
                qos: options.qos.min(msg.qos),
                retain: options.retain_as_published && msg.retain,
                subscription_ids: id.into_iter().collect(),
            };
            deliveries.push((session, out));
        }

        let persist = self.persist.as_ref();
        let durable: Vec<RouteTarget> = match persist {
            Some(_) => deliveries
                .iter()
                .filter(|(s, out)| out.qos != QoS::AtMostOnce && s.is_persistent())
                .map(|(s, out)| RouteTarget {
                    client_id: s.client_id.clone(),
                    qos: out.qos,
                    retain: out.retain,
                    subscription_ids: out.subscription_ids.clone(),
                })
                .collect(),
            None => Vec::new(),
        };
        let gate = match (persist, durable.is_empty()) {
            (Some(p), false) => {
                let gate = p.gate();
                // Logged before queueing so no Done for it can precede it in the log.
                p.log(&Op::Route { message: msg.clone(), targets: durable });
                logged = true;
                Some((p, gate))
            }
            _ => None,
        };
        for (session, out) in deliveries {
            let queued = self.enqueue(&session, out, gate.as_ref().map(|(p, _)| *p)).is_some();
            if queued && let Some(recipients) = recipients.as_deref_mut() {
                recipients.push(Recipient::of(&session));
            }
        }
        logged
    }

    /// Queues one copy; counts and logs what the queue limits dropped. Returns the id of the
    /// message that was queued (the oldest may have made room for it), `None` if none was.
    fn enqueue(&self, session: &Session, out: Outgoing, persist: Option<&Persist>) -> Option<u64> {
        let msg_id = out.message.id;
        match session.deliver(out, &self.config) {
            Enqueued::Queued => Some(msg_id),
            Enqueued::OfflineQos0 => {
                metrics::inc(&self.metrics.dropped_offline_qos0);
                None
            }
            Enqueued::Qos0Backlog => {
                metrics::inc(&self.metrics.dropped_qos0_backlog);
                None
            }
            Enqueued::Dropped(dropped) => {
                if dropped.qos == QoS::AtMostOnce {
                    metrics::inc(&self.metrics.dropped_qos0_backlog);
                } else {
                    metrics::inc(&self.metrics.dropped_queue_full);
                    tracing::debug!(client_id = %session.client_id, topic = %dropped.message.topic, "session queue full: message dropped");
                    if let Some(p) = persist.filter(|_| session.is_persistent()) {
                        p.log(&Op::Done { client_id: session.client_id.clone(), msg_id: dropped.message.id });
                    }
                }
                (dropped.message.id != msg_id).then_some(msg_id)
            }
        }
    }

    /// Queues one copy for one session (retained on subscribe); logs it if durable. Returns
    /// true if it logged.
    pub fn deliver_to(&self, session: &Session, out: Outgoing) -> bool {
        match self.persist_for(session).filter(|_| out.qos != QoS::AtMostOnce) {
            Some(p) => {
                let _gate = p.gate();
                self.log_route_one(p, session, &out);
                self.enqueue(session, out, Some(p));
                true
            }
            None => {
                self.enqueue(session, out, None);
                false
            }
        }
    }

    /// Sets or (empty payload) deletes the retained message of its topic. Always logged when
    /// persistence is on: retained messages survive restarts whatever their QoS.
    fn store_retained(&self, msg: &Arc<Message>) -> bool {
        if crate::sys::is_sys(&msg.topic) {
            write(&self.retained).set(msg.clone());
            return false;
        }
        let gate = self.persist.as_ref().map(|p| (p, p.gate()));
        let mut retained = write(&self.retained);
        let op = if msg.payload.is_empty() {
            retained.delete(&msg.topic);
            Op::RetainDelete { topic: msg.topic.clone() }
        } else {
            retained.set(msg.clone());
            Op::RetainSet { message: msg.clone() }
        };
        match gate {
            Some((p, _gate)) => {
                p.log(&op);
                true
            }
            None => false,
        }
    }

    /// Retained messages a new subscription should receive, already as copies to queue.
    pub fn retained_for(&self, filter: &str, sub: &Subscription, existed: bool, now_ms: u64) -> Vec<Outgoing> {
        let send = match sub.options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
        // Shared subscriptions never get retained messages (MQTT 5 §4.8.2).
        if !send || crate::topic::parse_shared(filter).is_some() {
            return Vec::new();
        }
        read(&self.retained)
            .matching(filter)
            .into_iter()
            .filter(|m| !m.is_expired(now_ms) && sub.audience.receives(&m.topic, &m.origin_tenant))
            .map(|message| Outgoing {
                qos: sub.options.qos.min(message.qos),
                message,
                retain: true,
                subscription_ids: sub.id.into_iter().collect(),
            })
            .collect()
    }

    /// Publishes a will (now due). A will on a platform topic is routed once the platform
    /// accepted it, and its write runs in a task of its own (no client waits for an ack).
    pub fn publish_will(self: &BrokerState, message: Arc<Message>, identity: &Arc<Identity>) {
        metrics::inc(&self.metrics.wills_published);
        let Some(publish) = crate::connection::platform_publish_of(&message, identity) else {
            self.route(message);
            return;
        };
        match self.hooks.on_platform_publish(identity, &publish) {
            Ok(write) => {
                self.route(message);
                let Some(state) = self.self_ref() else { return };
                tokio::spawn(async move {
                    if let Err(refusal) = write.await {
                        metrics::inc(&state.metrics.platform_refused);
                        tracing::info!(topic = %publish.topic, error = %refusal, "will not stored by the platform");
                    }
                });
            }
            Err(refusal) => {
                metrics::inc(&self.metrics.platform_refused);
                tracing::info!(topic = %message.topic, error = %refusal, "will refused by the platform");
            }
        }
    }
}
