//! Will messages waiting for their delay (MQTT 5 Will Delay Interval) to pass.
//!
//! A will is published when its connection ends without a clean DISCONNECT: at once if the
//! delay is 0, otherwise after `min(will delay, session expiry)` unless the client reconnects to
//! the same session first. The broker's housekeeping tick fires the due ones; what is due is
//! decided by the broker's clock (`Broker::with_clock`), so a test moves time instead of waiting.

use std::sync::Arc;
use std::sync::{Mutex, PoisonError};

use crate::hooks::Identity;
use crate::message::Message;

/// A will scheduled for later.
#[derive(Debug)]
pub(crate) struct PendingWill {
    pub client_id: Arc<str>,
    /// When it goes out (Unix ns, by the broker's clock).
    pub due_ns: i64,
    pub message: Arc<Message>,
    pub identity: Arc<Identity>,
}

#[derive(Debug, Default)]
pub(crate) struct PendingWills {
    pending: Mutex<Vec<PendingWill>>,
}

impl PendingWills {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PendingWill>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Schedules `will`, replacing an earlier one of the same client.
    pub fn schedule(&self, will: PendingWill) {
        let mut pending = self.lock();
        pending.retain(|w| w.client_id != will.client_id);
        pending.push(will);
    }

    /// The client came back to its session: its will is not sent.
    pub fn cancel(&self, client_id: &str) -> bool {
        let mut pending = self.lock();
        let before = pending.len();
        pending.retain(|w| &*w.client_id != client_id);
        pending.len() != before
    }

    /// Takes the will of `client_id` regardless of its delay (its session ended).
    pub fn take(&self, client_id: &str) -> Option<PendingWill> {
        let mut pending = self.lock();
        let index = pending.iter().position(|w| &*w.client_id == client_id)?;
        Some(pending.swap_remove(index))
    }

    /// Takes every will due at `now_ns`.
    pub fn take_due(&self, now_ns: i64) -> Vec<PendingWill> {
        let mut pending = self.lock();
        if pending.is_empty() {
            return Vec::new();
        }
        let (due, waiting): (Vec<_>, Vec<_>) = pending.drain(..).partition(|w| w.due_ns <= now_ns);
        *pending = waiting;
        due
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    const SECOND_NS: i64 = 1_000_000_000;

    fn will(client: &str, due_ns: i64) -> PendingWill {
        PendingWill {
            client_id: Arc::from(client),
            due_ns,
            message: Arc::new(Message {
                id: 1,
                topic: Arc::from("w"),
                payload: bytes::Bytes::new(),
                qos: QoS::AtMostOnce,
                retain: false,
                props: None,
                expires_at_ms: None,
                origin_client: None,
                origin_tenant: None,
            }),
            identity: Arc::new(Identity::Anonymous),
        }
    }

    #[test]
    fn schedule_cancel_and_fire() {
        let wills = PendingWills::default();
        let now = 1_700_000_000 * SECOND_NS;
        wills.schedule(will("a", now + 5 * SECOND_NS));
        wills.schedule(will("b", now + SECOND_NS));
        wills.schedule(will("a", now + 2 * SECOND_NS));
        assert_eq!(wills.len(), 2);
        assert!(wills.take_due(now).is_empty());
        let due = wills.take_due(now + SECOND_NS);
        assert_eq!(due.len(), 1);
        assert_eq!(&*due[0].client_id, "b");
        assert!(wills.cancel("a"));
        assert!(!wills.cancel("a"));
        assert_eq!(wills.len(), 0);
    }
}
