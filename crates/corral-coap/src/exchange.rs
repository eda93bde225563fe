//! Message-layer reliability (RFC 7252 §4): remembering requests to answer duplicates without
//! redoing them, and sending the server's own Confirmable messages until they are acknowledged.

use crate::config::CoapConfig;
use crate::message::{Kind, Message};
use crate::metrics::Metrics;
use crate::transport::Transport;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::oneshot;

/// A request (peer, message id) seen within the exchange lifetime.
#[derive(Debug, Clone)]
pub enum Seen {
    /// Being processed: a duplicate is dropped (the client retransmits until answered).
    InProgress,
    /// An empty ACK was sent; the answer follows as a separate response of its own.
    Acknowledged,
    /// Answered: a duplicate Confirmable request gets these bytes again.
    Answered(Arc<[u8]>),
    /// A Non-confirmable request was handled: a duplicate is dropped.
    Done,
}

/// What happened to a Confirmable message of the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Acknowledged,
    Reset,
    TimedOut,
}

type Key = (SocketAddr, u16);

/// Remembered requests, oldest first for expiry. Bounded by `max_exchanges`.
#[derive(Default)]
struct Remembered {
    seen: HashMap<Key, Seen>,
    order: VecDeque<(Instant, Key)>,
}

/// The message layer of one socket: shared by the receive loop and every request task.
pub struct Exchanges {
    transport: Arc<Transport>,
    config: CoapConfig,
    metrics: Arc<Metrics>,
    remembered: Mutex<Remembered>,
    /// Our Confirmable messages awaiting ACK or RST, by (peer, our message id).
    awaiting: Mutex<HashMap<Key, oneshot::Sender<Delivery>>>,
    next_message_id: AtomicU16,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Exchanges {
    pub(crate) fn new(transport: Arc<Transport>, config: CoapConfig, metrics: Arc<Metrics>) -> Exchanges {
        Exchanges {
            transport,
            config,
            metrics,
            remembered: Mutex::default(),
            awaiting: Mutex::default(),
            next_message_id: AtomicU16::new(rand::random()),
        }
    }

    /// A fresh message id for a message the server starts (RFC 7252 §4.4).
    pub fn message_id(&self) -> u16 {
        self.next_message_id.fetch_add(1, Relaxed)
    }

    /// Records a new request, or returns what was seen of it before (a duplicate).
    pub fn begin(&self, peer: SocketAddr, message_id: u16) -> Option<Seen> {
        let now = Instant::now();
        let mut r = lock(&self.remembered);
        while let Some(&(at, key)) = r.order.front() {
            let expired = now.duration_since(at) > self.config.exchange_lifetime;
            if !expired && r.order.len() < self.config.max_exchanges {
                break;
            }
            if !expired {
                self.metrics.exchanges_evicted.fetch_add(1, Relaxed);
            }
            r.order.pop_front();
            r.seen.remove(&key);
        }
        let key = (peer, message_id);
        if let Some(seen) = r.seen.get(&key) {
            return Some(seen.clone());
        }
        r.seen.insert(key, Seen::InProgress);
        r.order.push_back((now, key));
        None
    }

    /// Updates what a duplicate of this request will get.
    pub fn settle(&self, peer: SocketAddr, message_id: u16, seen: Seen) {
        if let Some(entry) = lock(&self.remembered).seen.get_mut(&(peer, message_id)) {
            *entry = seen;
        }
    }

    /// Forgets a request, so that a retransmission is processed afresh (it was refused before
    /// any work, e.g. for overload).
    pub fn forget(&self, peer: SocketAddr, message_id: u16) {
        lock(&self.remembered).seen.remove(&(peer, message_id));
    }

    pub async fn send(&self, peer: SocketAddr, bytes: &[u8]) {
        self.transport.send(peer, bytes).await
    }

    /// An empty ACK or RST reached us: wakes the sender of the message it answers.
    pub fn answered(&self, peer: SocketAddr, message: &Message) {
        let delivery = if message.kind == Kind::Reset { Delivery::Reset } else { Delivery::Acknowledged };
        if let Some(waiter) = lock(&self.awaiting).remove(&(peer, message.message_id)) {
            let _ = waiter.send(delivery);
        }
    }

    /// Sends a Confirmable message (its id is set here) and retransmits it with exponential
    /// back-off until it is acknowledged or reset, or MAX_RETRANSMIT retransmissions went
    /// unanswered (RFC 7252 §4.2).
    pub async fn send_confirmable(&self, peer: SocketAddr, mut message: Message) -> Delivery {
        message.kind = Kind::Confirmable;
        message.message_id = self.message_id();
        let key = (peer, message.message_id);
        let (tx, mut rx) = oneshot::channel();
        lock(&self.awaiting).insert(key, tx);
        let bytes = message.encode();
        // The first timeout is random in [ACK_TIMEOUT, 1.5 × ACK_TIMEOUT] so that many devices
        // behind one lost link do not retransmit in step.
        let mut timeout = self.config.ack_timeout.mul_f64(1.0 + rand::random::<f64>() * 0.5);
        for attempt in 0..=self.config.max_retransmit {
            if attempt > 0 {
                self.metrics.retransmissions.fetch_add(1, Relaxed);
            }
            self.send(peer, &bytes).await;
            match tokio::time::timeout(timeout, &mut rx).await {
                Ok(Ok(delivery)) => return delivery,
                Ok(Err(_)) => break,
                Err(_) => timeout *= 2,
            }
        }
        lock(&self.awaiting).remove(&key);
        self.metrics.unacknowledged.fetch_add(1, Relaxed);
        Delivery::TimedOut
    }
}
