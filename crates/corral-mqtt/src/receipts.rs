//! Delivery receipts, and who a message went to ([`Recipient`]): the platform hears that a
//! client took a message on a topic matching a filter. A receipt is given when a QoS 1 PUBACK or a QoS 2 PUBCOMP with a success reason
//! completes a delivery, and when a QoS 0 copy is written to the connection (a QoS 0 subscriber
//! acknowledges nothing, so being written is all the delivery there is). Tracked commands use it
//! to tell `delivered` from `sent`.
//!
//! Receipts are keyed on the topic, not on a callback held with the message, so a message
//! redelivered from a persistent session after a restart (which only the state log remembers) is
//! receipted like any other. While nobody listens they cost one atomic load per acknowledgement.
//!
//! A receipt is offered while the connection still holds its session's lock, in the same
//! critical section that forgets the message: whoever then finds the session no longer holds it
//! (`Broker::session_holds`) finds the receipt in its channel already. Lock order: session →
//! listeners; the listeners' lock is never held while a session is locked the other way round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use crate::hooks::Identity;
use crate::session::Session;
use crate::state::{read, write};

/// A client took a message: what [`Broker::acknowledgements`](crate::Broker::acknowledgements)
/// receivers get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    /// The client whose session received it (for a gateway, the gateway's).
    pub client_id: Arc<str>,
    pub topic: Arc<str>,
    /// The device that client is (a gateway is its own device); `None` for an application or
    /// an anonymous client.
    pub device: Option<Arc<str>>,
}

/// A session a platform publish was queued for, or that subscribes to a topic (see
/// [`Broker::publish_with_properties`](crate::Broker::publish_with_properties) and
/// [`Broker::subscribers`](crate::Broker::subscribers)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub client_id: Arc<str>,
    /// A connection holds the session now.
    pub online: bool,
    /// The device that owns the session (for a gateway, the gateway); `None` for an
    /// application's or an anonymous client's.
    pub device: Option<Arc<str>>,
}

impl Recipient {
    pub(crate) fn of(session: &Session) -> Recipient {
        Recipient {
            client_id: session.client_id.clone(),
            online: session.is_online(),
            device: Identity::device_of_principal(&session.owner).map(Arc::from),
        }
    }
}

/// Everyone listening for receipts. Lives in the broker state.
#[derive(Default)]
pub(crate) struct Receipts {
    /// True while any listener may exist: the hot path's only cost when none does.
    listening: AtomicBool,
    listeners: RwLock<Vec<Listener>>,
}

/// One listener: its filter and the channel it reads. Dropped when found closed.
struct Listener {
    filter: String,
    sender: mpsc::Sender<Acknowledged>,
}

impl Receipts {
    /// A new listener on `filter` (valid, checked by the caller); at most `capacity` receipts
    /// wait for it, later ones are lost with a warning.
    pub fn listen(&self, filter: &str, capacity: usize) -> mpsc::Receiver<Acknowledged> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let mut listeners = write(&self.listeners);
        listeners.retain(|l| !l.sender.is_closed());
        listeners.push(Listener { filter: filter.to_owned(), sender });
        self.listening.store(true, Ordering::Release);
        receiver
    }

    /// Whether a receipt could reach anyone; check it before building one.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// `client_id` (who is `who`) took a message on `topic`: tells every listener whose filter
    /// matches. Never waits: a full listener loses the receipt (with a warning).
    pub fn offer(&self, client_id: &Arc<str>, topic: &Arc<str>, who: &Identity) {
        let mut closed = false;
        {
            let listeners = read(&self.listeners);
            for listener in listeners.iter() {
                if !crate::topic::matches(&listener.filter, topic) {
                    continue;
                }
                let receipt = Acknowledged {
                    client_id: client_id.clone(),
                    topic: topic.clone(),
                    device: match who {
                        Identity::Device { id, .. } => Some(Arc::from(id.as_str())),
                        _ => None,
                    },
                };
                match listener.sender.try_send(receipt) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(filter = %listener.filter, %topic, "acknowledgement listener full: receipt lost");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                }
            }
        }
        if closed {
            let mut listeners = write(&self.listeners);
            listeners.retain(|l| !l.sender.is_closed());
            self.listening.store(!listeners.is_empty(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receipts_reach_matching_listeners_and_nobody_listening_costs_a_flag() {
        let receipts = Receipts::default();
        assert!(!receipts.listening());
        let mut commands = receipts.listen("devices/+/commands/+", 4);
        let device = Identity::Device { id: "gw".into(), tenant: "acme".into(), children: vec!["d1".into()] };
        let (client, topic): (Arc<str>, Arc<str>) = (Arc::from("gw"), Arc::from("devices/d1/commands/c1"));
        receipts.offer(&client, &topic, &device);
        receipts.offer(&client, &Arc::from("devices/d1/telemetry"), &device);
        let got = commands.try_recv().unwrap();
        assert_eq!(got, Acknowledged { client_id: client.clone(), topic, device: Some(Arc::from("gw")) });
        assert!(commands.try_recv().is_err(), "other topics are not receipted");
        drop(commands);
        receipts.offer(&client, &Arc::from("devices/d1/commands/c2"), &Identity::Anonymous);
        assert!(!receipts.listening(), "the last listener gone, the flag is down again");
    }
}
