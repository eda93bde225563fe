//! Rebuilding durable state from a snapshot plus the log that follows it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::op::Op;
use crate::codec::ProtocolVersion;
use crate::message::{Message, Outgoing};
use crate::session::Subscription;

/// A persistent session as the log describes it.
#[derive(Debug)]
pub(crate) struct RecoveredSession {
    pub expiry_secs: u32,
    pub protocol: ProtocolVersion,
    pub owner: Arc<str>,
    pub subscriptions: HashMap<String, Subscription>,
    /// By message id, i.e. in the order they were routed.
    pub messages: BTreeMap<u64, RecoveredMessage>,
    pub inbound_qos2: HashSet<u16>,
}

#[derive(Debug)]
pub(crate) struct RecoveredMessage {
    pub out: Outgoing,
    /// Set once it was sent (it goes back in flight, resent with DUP under this id).
    pub packet_id: Option<u16>,
    /// PUBREC received: resend PUBREL, not the message.
    pub released: bool,
}

/// Everything the state log holds.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub sessions: HashMap<Arc<str>, RecoveredSession>,
    pub retained: HashMap<Arc<str>, Arc<Message>>,
    pub max_msg_id: u64,
    pub ops: u64,
}

impl Recovered {
    pub fn apply(&mut self, op: Op) {
        self.ops += 1;
        match op {
            Op::SessionUpsert { client_id, expiry_secs, protocol, owner } => {
                let s = self.sessions.entry(client_id).or_insert_with(|| RecoveredSession {
                    expiry_secs,
                    protocol,
                    owner: owner.clone(),
                    subscriptions: HashMap::new(),
                    messages: BTreeMap::new(),
                    inbound_qos2: HashSet::new(),
                });
                s.expiry_secs = expiry_secs;
                s.protocol = protocol;
                s.owner = owner;
            }
            Op::SessionDelete { client_id } => {
                self.sessions.remove(&client_id);
            }
            Op::Subscribe { client_id, filter, subscription } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.subscriptions.insert(filter, subscription);
                }
            }
            Op::Unsubscribe { client_id, filter } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.subscriptions.remove(&filter);
                }
            }
            Op::Route { message, targets } => {
                self.max_msg_id = self.max_msg_id.max(message.id);
                for t in targets {
                    if let Some(s) = self.sessions.get_mut(&t.client_id) {
                        s.messages.entry(message.id).or_insert_with(|| RecoveredMessage {
                            out: Outgoing {
                                message: message.clone(),
                                qos: t.qos,
                                retain: t.retain,
                                subscription_ids: t.subscription_ids,
                            },
                            packet_id: None,
                            released: false,
                        });
                    }
                }
            }
            Op::Sent { client_id, msg_id, packet_id } => {
                if let Some(m) = self.message(&client_id, msg_id) {
                    m.packet_id = Some(packet_id);
                }
            }
            Op::Released { client_id, msg_id } => {
                if let Some(m) = self.message(&client_id, msg_id) {
                    m.released = true;
                }
            }
            Op::Done { client_id, msg_id } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.messages.remove(&msg_id);
                }
            }
            Op::InboundQos2 { client_id, packet_id, stored } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    if stored {
                        s.inbound_qos2.insert(packet_id);
                    } else {
                        s.inbound_qos2.remove(&packet_id);
                    }
                }
            }
            Op::RetainSet { message } => {
                self.max_msg_id = self.max_msg_id.max(message.id);
                self.retained.insert(message.topic.clone(), message);
            }
            Op::RetainDelete { topic } => {
                self.retained.remove(&topic);
            }
        }
    }

    fn message(&mut self, client_id: &str, msg_id: u64) -> Option<&mut RecoveredMessage> {
        self.sessions.get_mut(client_id)?.messages.get_mut(&msg_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;
    use crate::persist::op::RouteTarget;

    fn msg(id: u64) -> Arc<Message> {
        Arc::new(Message {
            id,
            topic: Arc::from("t"),
            payload: bytes::Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            props: None,
            expires_at_ms: None,
            origin_client: None,
            origin_tenant: None,
        })
    }

    fn route(id: u64, c: &Arc<str>) -> Op {
        Op::Route {
            message: msg(id),
            targets: vec![RouteTarget { client_id: c.clone(), qos: QoS::AtLeastOnce, retain: false, subscription_ids: vec![] }],
        }
    }

    #[test]
    fn replaying_a_suffix_twice_converges() {
        let c: Arc<str> = Arc::from("c");
        let log = [
            Op::SessionUpsert {
                client_id: c.clone(),
                expiry_secs: 60,
                protocol: ProtocolVersion::V5,
                owner: Arc::from("device:c"),
            },
            route(1, &c),
            route(2, &c),
            Op::Sent { client_id: c.clone(), msg_id: 1, packet_id: 7 },
            Op::Done { client_id: c.clone(), msg_id: 2 },
            Op::InboundQos2 { client_id: c.clone(), packet_id: 3, stored: true },
        ];
        let mut once = Recovered::default();
        log.iter().cloned().for_each(|op| once.apply(op));
        let mut twice = Recovered::default();
        log.iter().cloned().for_each(|op| twice.apply(op));
        log[1..].iter().cloned().for_each(|op| twice.apply(op));
        for r in [&once, &twice] {
            let s = &r.sessions[&c];
            assert_eq!(s.messages.keys().copied().collect::<Vec<_>>(), [1]);
            assert_eq!(s.messages[&1].packet_id, Some(7));
            assert!(s.inbound_qos2.contains(&3));
            assert_eq!(r.max_msg_id, 2);
        }
    }

    #[test]
    fn ops_for_unknown_sessions_are_ignored() {
        let c: Arc<str> = Arc::from("gone");
        let mut r = Recovered::default();
        r.apply(route(1, &c));
        r.apply(Op::SessionDelete { client_id: c.clone() });
        assert!(r.sessions.is_empty());
    }
}
