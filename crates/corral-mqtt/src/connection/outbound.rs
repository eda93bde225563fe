//! Messages to the client: draining the session queue into the inflight window, resending what
//! is unacknowledged after a reconnect, outbound topic aliases, the client's maximum packet
//! size, and the will.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::Connection;
use super::inbound::Staged;
use crate::codec::{LastWill, Packet, PubAck, QoS, ReasonCode, packet_len};
use crate::message::{Message, Outgoing, forwarded_properties, now_ms};
use crate::metrics;
use crate::persist::{Op, Persist};
use crate::session::{Inflight, Phase};
use crate::will::PendingWill;

/// Most messages moved from the queue per drain; the rest continue on the next loop turn so
/// one busy subscriber cannot keep its task from reading.
const DRAIN_BUDGET: usize = 512;

static EMPTY_TOPIC: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

enum Written {
    Yes,
    Expired,
    TooLarge,
}

impl Connection {
    /// Moves queued messages into the window and the write buffer.
    pub(super) fn drain(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let state = self.state.clone();
        let persist = state.persist_for(&self.session);
        let _gate = persist.map(Persist::gate);
        let session = self.session.clone();
        let mut st = session.lock();
        if !st.owned_by(self.generation) {
            return;
        }
        let now = now_ms();
        let mut budget = DRAIN_BUDGET;
        while budget > 0 {
            match st.queue.front() {
                None => break,
                Some(next) if next.qos != QoS::AtMostOnce && st.inflight.len() >= self.send_window => {
                    break;
                }
                Some(_) => {}
            }
            let Some(out) = st.queue.pop_front() else {
                break;
            };
            budget -= 1;
            let packet_id = if out.qos == QoS::AtMostOnce { 0 } else { st.next_packet_id() };
            let logged = persist.filter(|_| out.qos != QoS::AtMostOnce);
            match self.write_publish(&out, packet_id, false, now) {
                Written::Yes => {
                    state.metrics.message_out(out.qos);
                    // Written is all the delivery a QoS 0 copy gets: that is its receipt.
                    if out.qos == QoS::AtMostOnce && state.receipts.listening() {
                        state.receipts.offer(&self.client_id, &out.message.topic, &self.identity);
                    }
                    if out.qos != QoS::AtMostOnce {
                        if let Some(p) = logged {
                            p.log(&Op::Sent { client_id: self.client_id.clone(), msg_id: out.message.id, packet_id });
                        }
                        let phase = if out.qos == QoS::AtLeastOnce { Phase::AwaitPubAck } else { Phase::AwaitPubRec };
                        st.inflight.insert(packet_id, Inflight { out, phase });
                    }
                }
                outcome => {
                    self.count_unsent(&outcome);
                    if let Some(p) = logged {
                        p.log(&Op::Done { client_id: self.client_id.clone(), msg_id: out.message.id });
                    }
                }
            }
        }
        let more = budget == 0 && !st.queue.is_empty();
        drop(st);
        if more {
            self.session.wake.notify_one();
        }
    }

    fn count_unsent(&self, outcome: &Written) {
        match outcome {
            Written::Expired => metrics::inc(&self.state.metrics.dropped_expired),
            Written::TooLarge => metrics::inc(&self.state.metrics.dropped_too_large),
            Written::Yes => {}
        }
    }

    /// After CONNACK of a resumed session: unacknowledged PUBLISH again with DUP, PUBREL for
    /// those already PUBREC'd (MQTT §4.4).
    pub(super) fn resend_inflight(&mut self) {
        let state = self.state.clone();
        let persist = state.persist_for(&self.session);
        let _gate = persist.map(Persist::gate);
        let session = self.session.clone();
        let mut st = session.lock();
        if !st.owned_by(self.generation) || st.inflight.is_empty() {
            return;
        }
        let now = now_ms();
        let pending: Vec<(u16, Inflight)> = st.inflight.iter().map(|(id, i)| (*id, i.clone())).collect();
        for (packet_id, inflight) in pending {
            if inflight.phase == Phase::AwaitPubComp {
                self.send(&Packet::PubRel(PubAck::new(packet_id, ReasonCode::SUCCESS)));
                continue;
            }
            let outcome = self.write_publish(&inflight.out, packet_id, true, now);
            if !matches!(outcome, Written::Yes) {
                self.count_unsent(&outcome);
                st.inflight.remove(&packet_id);
                if let Some(p) = persist {
                    p.log(&Op::Done { client_id: self.client_id.clone(), msg_id: inflight.out.message.id });
                }
            }
        }
    }

    /// Encodes one PUBLISH, with a topic alias when the client allows them, unless it expired
    /// or would exceed the client's maximum packet size (then it is dropped, MQTT 5 §3.1.2.11.4).
    fn write_publish(&mut self, out: &Outgoing, packet_id: u16, dup: bool, now: u64) -> Written {
        let Some(mut publish) = out.to_publish(packet_id, dup, now) else {
            return Written::Expired;
        };
        let mut new_alias = None;
        if self.client_alias_max > 0 {
            if let Some(&alias) = self.outbound_aliases.get(&publish.topic) {
                publish.properties.topic_alias = Some(alias);
                publish.topic = EMPTY_TOPIC.clone();
            } else if self.outbound_aliases.len() < usize::from(self.client_alias_max) {
                let alias = self.outbound_aliases.len() as u16 + 1;
                publish.properties.topic_alias = Some(alias);
                new_alias = Some(alias);
            }
        }
        let packet = Packet::Publish(publish);
        if packet_len(&packet, self.version) > self.client_max_packet {
            tracing::debug!(client_id = %self.client_id, topic = %out.message.topic, "message exceeds the client's maximum packet size; dropped");
            return Written::TooLarge;
        }
        if let Some(alias) = new_alias {
            self.outbound_aliases.insert(out.message.topic.clone(), alias);
        }
        self.send(&packet);
        Written::Yes
    }

    /// The will as a routable message. `&mut self` only so the connection's task stays `Send`
    /// across the tenant lookup.
    async fn will_message(&mut self, will: Box<LastWill>) -> Arc<Message> {
        let will = *will;
        let device_tenant = match crate::acl::device_to_resolve(&self.identity, &will.topic) {
            Some(device) => crate::hooks::device_tenant(&*self.state.hooks, device).await,
            None => None,
        };
        let origin_tenant = self.origin_tenant(device_tenant);
        Arc::new(Message {
            id: self.state.new_message_id(),
            topic: Arc::from(will.topic.as_str()),
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            props: forwarded_properties(&will.properties),
            expires_at_ms: will.properties.message_expiry_interval.map(|s| now_ms() + u64::from(s) * 1000),
            origin_client: Some(self.client_id.clone()),
            origin_tenant,
        })
    }

    pub(super) async fn publish_will_now(&mut self, will: Box<LastWill>) {
        let message = self.will_message(will).await;
        self.state.publish_will(message, &self.identity);
    }

    /// The connection ended without a clean DISCONNECT: publish the will now or schedule it
    /// after min(will delay, session expiry).
    pub(super) async fn release_will(&mut self) {
        let Some(will) = self.will.take() else { return };
        let delay_secs = will.properties.will_delay_interval.unwrap_or(0).min(self.session_expiry_secs);
        if delay_secs == 0 {
            return self.publish_will_now(will).await;
        }
        let message = self.will_message(will).await;
        self.state.wills.schedule(PendingWill {
            client_id: self.client_id.clone(),
            // By the broker's clock, like the session expiry it is bounded by (see `will.rs`).
            due_ns: self.state.clock.now_ns().saturating_add(i64::from(delay_secs) * 1_000_000_000),
            message,
            identity: self.identity.clone(),
        });
    }

    /// Lets platform publishes already handed to the hook finish and be routed, so data the
    /// platform accepted is not lost to subscribers because its publisher hung up.
    pub(super) async fn settle_staged(&mut self) {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.staged.is_empty() {
            match tokio::time::timeout_at(deadline, self.staged.next()).await {
                Ok(Some(Staged::Accept { message, .. })) => {
                    self.state.route(message);
                }
                // It waited for its device's tenant only; had that been at hand, it would have
                // been routed before the connection ended. (Its acknowledgement, like any after
                // the close, is never sent.)
                Ok(Some(resolved @ Staged::Resolved(_))) => self.on_dequeued(resolved),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}
