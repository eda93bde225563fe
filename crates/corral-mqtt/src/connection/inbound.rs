//! Packets from the client: PUBLISH (ACL, platform hook, routing, ordered durable acks), the
//! acknowledgements of our own publishes, SUBSCRIBE/UNSUBSCRIBE, PINGREQ, DISCONNECT.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{Connection, Exit};
use crate::codec::{Disconnect, Packet, PubAck, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe};
use crate::hooks::{Identity, InboundPublish, PlatformWrite, PublishRefusal, TenantLookup};
use crate::message::{Message, forwarded_properties, now_ms};
use crate::persist::{Op, Persist};
use crate::session::{Phase, Subscription};
use crate::{acl, metrics, topic};

/// Payloads up to this size are copied out of the read buffer, so a queued small message does
/// not pin a whole read buffer in memory; larger ones are shared without copying.
const COPY_PAYLOAD_BELOW: usize = 512;

/// Publishes of one connection waiting for their platform write (or their turn) before the
/// broker reads more from it: bounds what a flooding QoS 0 publisher holds in memory.
const MAX_STAGED: usize = 512;

/// A publish waiting for its turn in the (ordered) first stage.
pub(crate) enum Staged {
    /// Its device's tenant was looked up (see `stage_lookup`): decide on it now, at the head of
    /// the stage. Queued, it holds back the routing of later publishes.
    Resolved(Box<Looked>),
    /// To be routed, then acknowledged. Queued, it holds back the routing of later publishes.
    Accept { message: Arc<Message>, qos: QoS, packet_id: u16 },
    /// Routed already (`logged`: that changed logged broker state); acknowledge it.
    Routed { qos: QoS, packet_id: u16, logged: bool },
    /// Not routed; acknowledged with `reason` (v5 0x87 on ACL denial; success for 3.1.1).
    Refuse { qos: QoS, packet_id: u16, reason: ReasonCode },
    /// The platform refused it (decoding, or its write); `held_routing` if it was queued to be
    /// routed after the write.
    PlatformRefused { qos: QoS, packet_id: u16, topic: Arc<str>, refusal: PublishRefusal, held_routing: bool },
    /// A QoS 2 resend of a packet id we already hold: PUBREC again, route nothing.
    Duplicate { packet_id: u16 },
}

impl Staged {
    /// Whether, while queued, it keeps later publishes from being routed before it.
    fn holds_routing(&self) -> bool {
        matches!(self, Staged::Resolved(_) | Staged::Accept { .. } | Staged::PlatformRefused { held_routing: true, .. })
    }
}

/// A publish that waited for the tenant of the device its topic names.
pub(crate) struct Looked {
    publish: Publish,
    topic: Arc<str>,
    device_tenant: Option<String>,
    /// Taken when it arrived: message ids follow arrival order, which recovery replays.
    message_id: u64,
}

/// Where a publish's outcome joins the ordered first stage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// It was just read: behind everything staged.
    Arrived,
    /// Its tenant lookup, at the head of the stage, just finished: nothing is ahead of it, and
    /// everything staged arrived after it.
    Head,
}

/// The hook's view of a message on a platform topic; `None` if the topic is not one.
pub(crate) fn platform_publish_of(message: &Message, identity: &Identity) -> Option<InboundPublish> {
    let _ = identity;
    let (device, kind) = topic::platform_topic(&message.topic)?;
    let props = message.props.as_deref();
    Some(InboundPublish {
        client_id: message.origin_client.clone().unwrap_or_else(|| Arc::from("")),
        topic: message.topic.clone(),
        device: device.to_owned(),
        kind,
        payload: message.payload.clone(),
        qos: message.qos,
        retain: message.retain,
        content_type: props.and_then(|p| p.content_type.clone()),
        user_properties: props.map(|p| p.user_properties.clone()).unwrap_or_default(),
    })
}

impl Connection {
    pub(super) fn on_packet(&mut self, packet: Packet) {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(a) => self.on_outbound_ack(a, Phase::AwaitPubAck),
            Packet::PubComp(a) => self.on_outbound_ack(a, Phase::AwaitPubComp),
            Packet::PubRec(a) => self.on_pubrec(a),
            Packet::PubRel(a) => self.on_pubrel(a),
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(d) => self.on_disconnect(d),
            other => {
                tracing::info!(client_id = %self.client_id, packet = other.kind(), "unexpected packet from client");
                metrics::inc(&self.state.metrics.protocol_errors);
                self.fail(Exit::Protocol(ReasonCode::PROTOCOL_ERROR));
            }
        }
    }

    fn on_publish(&mut self, mut p: Publish) {
        let qos = p.qos;
        let packet_id = p.packet_id;
        self.state.metrics.message_in(qos);
        if let Some(bucket) = &mut self.rate {
            let now = Instant::now();
            if let Some(wait) = bucket.take(now) {
                metrics::inc(&self.state.metrics.throttled);
                self.throttled_until = Some(now + wait.max(Duration::from_millis(1)));
            }
        }
        if !p.properties.subscription_identifiers.is_empty() {
            // Only the server puts subscription identifiers into a PUBLISH (MQTT 5 §3.3.4).
            metrics::inc(&self.state.metrics.protocol_errors);
            return self.fail(Exit::Protocol(ReasonCode::PROTOCOL_ERROR));
        }
        let topic = match self.resolve_topic(&p) {
            Ok(t) => t,
            Err(reason) => {
                metrics::inc(&self.state.metrics.protocol_errors);
                return self.fail(Exit::Protocol(reason));
            }
        };
        if qos != QoS::AtMostOnce {
            let held = self.session.lock().inbound_qos2.len();
            // Only an MQTT 5 client was told the Receive Maximum; a 3.1.1 client is held back by
            // not reading from it (see `inbound_paused`) and never gets here over the limit.
            if self.is_v5() && self.unacked_inbound + held >= usize::from(self.state.config.receive_maximum) {
                tracing::info!(client_id = %self.client_id, "receive maximum exceeded");
                metrics::inc(&self.state.metrics.protocol_errors);
                return self.fail(Exit::Protocol(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
            }
            self.unacked_inbound += 1;
        }
        if qos == QoS::ExactlyOnce && self.session.lock().inbound_qos2.contains(&packet_id) {
            return self.stage_ready(Staged::Duplicate { packet_id }, Turn::Arrived);
        }
        if p.payload.len() < COPY_PAYLOAD_BELOW {
            p.payload = Bytes::copy_from_slice(&p.payload);
        }
        // An application naming a device (a command) needs that device's tenant, for the ACL and
        // for the tenant the message carries. At hand, the publish goes on now; otherwise the
        // lookup waits in the stage, in arrival order, and this task goes on serving the client.
        let device_tenant = match acl::device_to_resolve(&self.identity, &topic) {
            None => None,
            Some(device) => match self.state.hooks.device_tenant(device) {
                Some(tenant) => Some(tenant),
                None => {
                    let lookup = self.state.hooks.resolve_device_tenant(device);
                    return self.stage_lookup(lookup, p, topic);
                }
            },
        };
        self.decide(p, topic, device_tenant, None, Turn::Arrived);
    }

    /// Queues a publish behind the lookup of its device's tenant; it is decided on when its turn
    /// comes (`Staged::Resolved`). Later publishes are neither routed nor acknowledged before it,
    /// so the order a client sees is the one it would see had the tenant been at hand.
    fn stage_lookup(&mut self, lookup: TenantLookup, publish: Publish, topic: Arc<str>) {
        let message_id = self.state.new_message_id();
        self.routes_held += 1;
        self.staged.push_back(Box::pin(async move {
            let device_tenant = lookup.await;
            Staged::Resolved(Box::new(Looked { publish, topic, device_tenant, message_id }))
        }));
    }

    /// Decides on a publish whose device's tenant is known (when its topic needs one): the ACL,
    /// the message, the platform hook; then [`accept`](Self::accept) routes and acknowledges it.
    /// `message_id` is the one taken when it arrived, if it waited for a lookup.
    fn decide(&mut self, p: Publish, topic: Arc<str>, device_tenant: Option<String>, message_id: Option<u64>, turn: Turn) {
        let (qos, packet_id) = (p.qos, p.packet_id);
        if !acl::may_publish(&self.identity, &topic, &acl::Resolved(device_tenant.as_deref())) {
            metrics::inc(&self.state.metrics.denied_publish);
            tracing::info!(client_id = %self.client_id, topic = %topic, qos = qos as u8, "publish denied by ACL");
            if qos == QoS::AtMostOnce {
                return;
            }
            // 3.1.1 has no negative ack: acknowledge and drop, like Mosquitto.
            let reason = if self.is_v5() { ReasonCode::NOT_AUTHORIZED } else { ReasonCode::SUCCESS };
            return self.stage_ready(Staged::Refuse { qos, packet_id, reason }, turn);
        }
        let now = now_ms();
        let message = Arc::new(Message {
            id: message_id.unwrap_or_else(|| self.state.new_message_id()),
            topic,
            payload: p.payload,
            qos,
            retain: p.retain,
            props: if self.is_v5() { forwarded_properties(&p.properties) } else { None },
            expires_at_ms: p.properties.message_expiry_interval.map(|s| now + u64::from(s) * 1000),
            origin_client: Some(self.client_id.clone()),
            origin_tenant: self.origin_tenant(device_tenant),
        });
        let write = match platform_publish_of(&message, &self.identity) {
            None => None,
            Some(publish) => match self.state.hooks.on_platform_publish(&self.identity, &publish) {
                Ok(write) => Some(write),
                Err(refusal) => {
                    let refused = Staged::PlatformRefused { qos, packet_id, topic: publish.topic, refusal, held_routing: false };
                    return self.stage_ready(refused, turn);
                }
            },
        };
        self.accept(message, qos, packet_id, write, turn);
    }

    /// An accepted publish. Routed now, unless a publish queued ahead of it has yet to be routed
    /// (arrival order) or it is QoS 2 with a platform write to wait for (a resend after a crash
    /// must not deliver it twice); acknowledged in arrival order once `write` is durable.
    fn accept(&mut self, message: Arc<Message>, qos: QoS, packet_id: u16, write: Option<PlatformWrite>, turn: Turn) {
        let topic = message.topic.clone();
        // At the head of the stage nothing ahead of it is left to route.
        let behind = turn == Turn::Arrived && self.routes_held > 0;
        if behind || (qos == QoS::ExactlyOnce && write.is_some()) {
            self.routes_held += 1;
            return self.push_staged(
                turn,
                Box::pin(async move {
                    if let Some(write) = write
                        && let Err(refusal) = write.await
                    {
                        return Staged::PlatformRefused { qos, packet_id, topic, refusal, held_routing: true };
                    }
                    Staged::Accept { message, qos, packet_id }
                }),
            );
        }
        let routed = self.route(message, qos, packet_id);
        match write {
            None => self.stage_ready(routed, turn),
            Some(write) => self.push_staged(
                turn,
                Box::pin(async move {
                    match write.await {
                        Ok(()) => routed,
                        Err(refusal) => Staged::PlatformRefused { qos, packet_id, topic, refusal, held_routing: false },
                    }
                }),
            ),
        }
    }

    /// Queues what a publish waits for next: behind everything staged when it just arrived; at
    /// the head when it was the head already, so it keeps its place ahead of later publishes.
    fn push_staged(&mut self, turn: Turn, next: BoxFuture<'static, Staged>) {
        match turn {
            Turn::Arrived => self.staged.push_back(next),
            Turn::Head => self.staged.push_front(next),
        }
    }

    /// Routes an accepted publish (a QoS 2 packet id is held from now on, so a resend is a
    /// duplicate) and returns what acknowledges it.
    fn route(&mut self, message: Arc<Message>, qos: QoS, packet_id: u16) -> Staged {
        let mut logged = self.state.route(message);
        if qos == QoS::ExactlyOnce {
            logged |= self.hold_inbound_qos2(packet_id);
        }
        Staged::Routed { qos, packet_id, logged }
    }

    /// Topic of a PUBLISH after MQTT 5 topic alias resolution, or the DISCONNECT reason.
    fn resolve_topic(&mut self, p: &Publish) -> Result<Arc<str>, ReasonCode> {
        let Some(alias) = p.properties.topic_alias.filter(|_| self.is_v5()) else {
            return if p.topic.is_empty() { Err(ReasonCode::PROTOCOL_ERROR) } else { Ok(p.topic.clone()) };
        };
        if alias == 0 || alias > self.state.config.topic_alias_maximum {
            return Err(ReasonCode::TOPIC_ALIAS_INVALID);
        }
        if p.topic.is_empty() {
            self.inbound_aliases.get(&alias).cloned().ok_or(ReasonCode::PROTOCOL_ERROR)
        } else {
            self.inbound_aliases.insert(alias, p.topic.clone());
            Ok(p.topic.clone())
        }
    }

    /// The tenant a message from this client belongs to, given the tenant of the device its
    /// topic names when [`acl::device_to_resolve`] asked for it.
    pub(super) fn origin_tenant(&self, device_tenant: Option<String>) -> Option<Arc<str>> {
        match &*self.identity {
            // A device, or a gateway for its children, which the registry keeps in its tenant.
            Identity::Device { .. } => self.tenant.clone(),
            _ => device_tenant.map(Arc::from).or_else(|| self.tenant.clone()),
        }
    }

    /// Handles `staged` now if nothing is ahead of it (or it is the head), else queues it behind
    /// the others.
    fn stage_ready(&mut self, staged: Staged, turn: Turn) {
        if turn == Turn::Head || self.staged.is_empty() {
            self.on_staged(staged);
        } else {
            if staged.holds_routing() {
                self.routes_held += 1;
            }
            self.staged.push_back(Box::pin(async move { staged }));
        }
    }

    /// The next publish out of the queue (in arrival order).
    pub(super) fn on_dequeued(&mut self, staged: Staged) {
        if staged.holds_routing() {
            self.routes_held -= 1;
        }
        self.on_staged(staged);
    }

    /// A publish's turn (in arrival order): route it if not yet done, and acknowledge it.
    fn on_staged(&mut self, staged: Staged) {
        match staged {
            Staged::Resolved(looked) => {
                let Looked { publish, topic, device_tenant, message_id } = *looked;
                self.decide(publish, topic, device_tenant, Some(message_id), Turn::Head);
            }
            Staged::Accept { message, qos, packet_id } => {
                let routed = self.route(message, qos, packet_id);
                self.on_staged(routed);
            }
            Staged::Routed { qos, packet_id, logged } => match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.ack_after(Packet::PubAck(PubAck::new(packet_id, ReasonCode::SUCCESS)), logged),
                QoS::ExactlyOnce => self.ack_after(Packet::PubRec(PubAck::new(packet_id, ReasonCode::SUCCESS)), logged),
            },
            Staged::Refuse { qos, packet_id, reason } => self.ack_now_or_in_order(qos, packet_id, reason),
            Staged::PlatformRefused { qos, packet_id, topic, refusal, .. } => {
                metrics::inc(&self.state.metrics.platform_refused);
                tracing::info!(client_id = %self.client_id, topic = %topic, error = %refusal, "platform refused publish");
                match (qos, self.is_v5()) {
                    (QoS::AtMostOnce, _) => {}
                    (_, true) => {
                        let allowed = [0x80, 0x83, 0x87, 0x90, 0x97, 0x99];
                        let reason =
                            if allowed.contains(&refusal.reason.0) { refusal.reason } else { ReasonCode::UNSPECIFIED_ERROR };
                        self.ack_now_or_in_order(qos, packet_id, reason);
                    }
                    (_, false) => self.fail(Exit::Refused),
                }
            }
            Staged::Duplicate { packet_id } => {
                let durable = self.state.persist_for(&self.session).is_some();
                self.ack_after(Packet::PubRec(PubAck::new(packet_id, ReasonCode::SUCCESS)), durable);
            }
        }
    }

    fn ack_now_or_in_order(&mut self, qos: QoS, packet_id: u16, reason: ReasonCode) {
        let ack = PubAck::new(packet_id, reason);
        let packet = if qos == QoS::ExactlyOnce { Packet::PubRec(ack) } else { Packet::PubAck(ack) };
        self.ack_after(packet, false);
    }

    /// Remembers an inbound QoS 2 packet id until PUBREL; true if that was logged.
    fn hold_inbound_qos2(&mut self, packet_id: u16) -> bool {
        let persist = self.state.persist_for(&self.session);
        let _gate = persist.map(Persist::gate);
        let mut st = self.session.lock();
        if !st.owned_by(self.generation) {
            return false;
        }
        st.inbound_qos2.insert(packet_id);
        if let Some(p) = persist {
            p.log(&Op::InboundQos2 { client_id: self.client_id.clone(), packet_id, stored: true });
        }
        persist.is_some()
    }

    /// Sends `packet` once everything logged so far is durable (when `wait`), keeping acks in
    /// arrival order behind any still waiting.
    fn ack_after(&mut self, packet: Packet, wait: bool) {
        let barrier = self.state.persist.as_ref().filter(|_| wait).map(Persist::barrier);
        if barrier.is_none() && self.acks.is_empty() {
            return self.send_ack(packet);
        }
        self.acks.push_back(Box::pin(async move {
            match barrier {
                Some(durable) => durable.await.unwrap_or(false).then_some(packet),
                None => Some(packet),
            }
        }));
    }

    pub(super) fn on_ack_ready(&mut self, ack: Option<Packet>) {
        match ack {
            Some(packet) => self.send_ack(packet),
            None => {
                // The state log could not be written: the publish is not acknowledged; the
                // client resends it after reconnecting.
                self.fail(Exit::Protocol(ReasonCode::UNSPECIFIED_ERROR));
            }
        }
    }

    /// A 3.1.1 client with `receive_maximum` QoS 1/2 publishes awaiting their (durable) ack is
    /// not read from until one completes: TCP back-pressure slows it down, as MQTT 5's Receive
    /// Maximum would, instead of a disconnect it could not have seen coming.
    pub(super) fn inbound_paused(&self) -> bool {
        (!self.is_v5() && self.unacked_inbound >= usize::from(self.state.config.receive_maximum))
            // QoS 0 publishes wait for their platform write too, with no window of their own.
            || self.staged.len() >= MAX_STAGED
    }

    fn send_ack(&mut self, packet: Packet) {
        if matches!(packet, Packet::PubAck(_) | Packet::PubRec(_)) {
            self.unacked_inbound = self.unacked_inbound.saturating_sub(1);
        }
        self.send(&packet);
    }

    fn on_pubrel(&mut self, ack: PubAck) {
        let persist = self.state.persist_for(&self.session);
        let released = {
            let _gate = persist.map(Persist::gate);
            let mut st = self.session.lock();
            let released = st.owned_by(self.generation) && st.inbound_qos2.remove(&ack.packet_id);
            if released && let Some(p) = persist {
                p.log(&Op::InboundQos2 { client_id: self.client_id.clone(), packet_id: ack.packet_id, stored: false });
            }
            released
        };
        let reason = if released || !self.is_v5() { ReasonCode::SUCCESS } else { ReasonCode::PACKET_IDENTIFIER_NOT_FOUND };
        // Durable before PUBCOMP: a forgotten release would swallow a later publish reusing the id.
        self.ack_after(Packet::PubComp(PubAck::new(ack.packet_id, reason)), released && persist.is_some());
    }

    /// PUBACK (QoS 1 done) or PUBCOMP (QoS 2 done) for a message we sent. A success is a
    /// delivery receipt, given under the session lock that forgets the message (`receipts.rs`).
    fn on_outbound_ack(&mut self, ack: PubAck, expected: Phase) {
        let persist = self.state.persist_for(&self.session);
        let _gate = persist.map(Persist::gate);
        let mut st = self.session.lock();
        if !st.owned_by(self.generation) {
            return;
        }
        if st.inflight.get(&ack.packet_id).is_some_and(|i| i.phase == expected)
            && let Some(done) = st.inflight.remove(&ack.packet_id)
        {
            if let Some(p) = persist {
                p.log(&Op::Done { client_id: self.client_id.clone(), msg_id: done.out.message.id });
            }
            if !ack.reason.is_error() && self.state.receipts.listening() {
                self.state.receipts.offer(&self.client_id, &done.out.message.topic, &self.identity);
            }
        }
    }

    fn on_pubrec(&mut self, ack: PubAck) {
        let persist = self.state.persist_for(&self.session);
        let reply = {
            let _gate = persist.map(Persist::gate);
            let mut st = self.session.lock();
            if !st.owned_by(self.generation) {
                return;
            }
            match st.inflight.get_mut(&ack.packet_id) {
                Some(inflight) if inflight.phase == Phase::AwaitPubRec && ack.reason.is_error() => {
                    let msg_id = inflight.out.message.id;
                    st.inflight.remove(&ack.packet_id);
                    if let Some(p) = persist {
                        p.log(&Op::Done { client_id: self.client_id.clone(), msg_id });
                    }
                    None
                }
                Some(inflight) if inflight.phase != Phase::AwaitPubAck => {
                    inflight.phase = Phase::AwaitPubComp;
                    if let Some(p) = persist {
                        p.log(&Op::Released { client_id: self.client_id.clone(), msg_id: inflight.out.message.id });
                    }
                    Some(ReasonCode::SUCCESS)
                }
                _ if self.version == crate::codec::ProtocolVersion::V5 => Some(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
                _ => Some(ReasonCode::SUCCESS),
            }
        };
        if let Some(reason) = reply {
            self.send(&Packet::PubRel(PubAck::new(ack.packet_id, reason)));
        }
    }

    fn on_subscribe(&mut self, s: Subscribe) {
        let id = s.properties.subscription_identifiers.first().copied();
        let audience = acl::Audience::of(&self.identity);
        let now = now_ms();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let mut granted = Vec::with_capacity(s.filters.len());
        for (filter, options) in s.filters {
            let inner = topic::parse_shared(&filter).map_or(filter.as_str(), |(_, f)| f);
            if !acl::may_subscribe(&self.identity, inner) {
                metrics::inc(&self.state.metrics.denied_subscribe);
                tracing::info!(client_id = %self.client_id, filter = %filter, "subscription denied by ACL");
                reasons.push(if self.is_v5() { ReasonCode::NOT_AUTHORIZED } else { ReasonCode::UNSPECIFIED_ERROR });
                continue;
            }
            let sub = Subscription { options, id, audience: audience.clone() };
            let existed = self.state.subscribe(&self.session, self.generation, &filter, sub.clone());
            retained.extend(self.state.retained_for(&filter, &sub, existed, now));
            reasons.push(ReasonCode(options.qos as u8));
            granted.push(filter);
        }
        self.send(&Packet::SubAck(SubAck { packet_id: s.packet_id, properties: Default::default(), reasons }));
        // After the SUBACK, as the spec wants; the drain that follows sends them.
        for out in retained {
            self.state.deliver_to(&self.session, out);
        }
        if !granted.is_empty() {
            self.state.hooks.on_subscribed(&self.identity, &self.client_id, &granted, false);
        }
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let removed = self.state.unsubscribe(&self.session, self.generation, filter);
            reasons.push(if removed { ReasonCode::SUCCESS } else { ReasonCode::NO_SUBSCRIPTION_EXISTED });
        }
        if !self.is_v5() {
            reasons.clear();
        }
        self.send(&Packet::UnsubAck(UnsubAck { packet_id: u.packet_id, properties: Default::default(), reasons }));
    }

    fn on_disconnect(&mut self, d: Disconnect) {
        if self.is_v5()
            && let Some(expiry) = d.properties.session_expiry_interval
        {
            if self.session_expiry_secs == 0 && expiry != 0 {
                // MQTT 5 §3.14.2.2.2: a session that was not durable cannot become durable here.
                return self.fail(Exit::Protocol(ReasonCode::PROTOCOL_ERROR));
            }
            self.set_session_expiry(expiry);
        }
        let with_will = self.is_v5() && d.reason == ReasonCode::DISCONNECT_WITH_WILL;
        self.fail(Exit::ClientDisconnect { with_will });
    }

    fn set_session_expiry(&mut self, expiry: u32) {
        self.session_expiry_secs = expiry;
        let _gate = self.state.persist.as_ref().map(Persist::gate);
        let mut st = self.session.lock();
        if !st.owned_by(self.generation) {
            return;
        }
        st.expiry_secs = expiry;
        let was = self.session.persistent.swap(expiry > 0, std::sync::atomic::Ordering::AcqRel);
        if let Some(p) = &self.state.persist {
            if expiry > 0 {
                p.log(&Op::SessionUpsert {
                    client_id: self.client_id.clone(),
                    expiry_secs: expiry,
                    protocol: st.protocol,
                    owner: self.session.owner.clone(),
                });
            } else if was {
                p.log(&Op::SessionDelete { client_id: self.client_id.clone() });
            }
        }
    }
}
