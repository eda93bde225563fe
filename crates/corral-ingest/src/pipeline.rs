//! The pipeline: the one corridor every decoded batch walks, whatever door it came in through.

use async_trait::async_trait;
use corral_model::{Batch, Envelope, WireError};
use std::sync::Arc;

/// What a transport learns when its batches were accepted: they are durable when this returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    pub rows: usize,
    pub values: usize,
}

/// The door every transport knocks on. Returns only once the data is durable (WAL fsync), so the
/// transport may acknowledge (HTTP 2xx, PUBACK, 2.04).
#[async_trait]
pub trait Sink: Send + Sync {
    async fn submit(&self, envelope: &Envelope, batches: Vec<Batch>) -> Result<Accepted, WireError>;
}

/// Durable storage as the pipeline needs it: all batches of one request are stored atomically
/// (all or nothing), and the call returns after the fsync that holds them.
#[async_trait]
pub trait DurableStore: Send + Sync {
    /// Makes the batches durable and gives them back (for observers).
    async fn write(&self, batches: Vec<Batch>) -> Result<Vec<Batch>, WireError>;
}

/// Told after every durable write who was heard from (the registry's `last_seen`).
pub trait Presence: Send + Sync {
    fn heard_from(&self, envelope: &Envelope);
}

/// Told about every batch once it is durable: the rules engine and the console's live views
/// listen here. `wants` is asked first so the pipeline copies batches only when someone listens.
#[async_trait]
pub trait Observer: Send + Sync {
    fn wants(&self) -> bool;
    /// May wait (backpressure) but never fails: the data is already durable.
    async fn observe(&self, envelope: &Envelope, batches: Vec<Batch>);
}

/// Wires decoders' output to storage, presence and observers. Cheap to clone; shared by all
/// transports.
#[derive(Clone)]
pub struct Pipeline {
    store: Arc<dyn DurableStore>,
    presence: Arc<dyn Presence>,
    observers: Vec<Arc<dyn Observer>>,
}

impl Pipeline {
    pub fn new(store: Arc<dyn DurableStore>, presence: Arc<dyn Presence>) -> Self {
        Pipeline { store, presence, observers: Vec::new() }
    }

    /// Adds an observer that sees every durable batch (rules, live views), after those added
    /// before it.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }
}

#[async_trait]
impl Sink for Pipeline {
    async fn submit(&self, envelope: &Envelope, batches: Vec<Batch>) -> Result<Accepted, WireError> {
        let batches: Vec<Batch> = batches.into_iter().filter(|b| !b.rows.is_empty()).collect();
        let accepted =
            Accepted { rows: batches.iter().map(|b| b.rows.len()).sum(), values: batches.iter().map(Batch::value_count).sum() };
        if accepted.rows > 0 {
            let batches = self.store.write(batches).await?;
            let listening: Vec<&Arc<dyn Observer>> = self.observers.iter().filter(|o| o.wants()).collect();
            if let Some((last, others)) = listening.split_last() {
                for observer in others {
                    observer.observe(envelope, batches.clone()).await;
                }
                last.observe(envelope, batches).await;
            }
        }
        // Presence only after durability: a device whose write failed was heard, but we would
        // rather under-report last_seen than claim data we do not have.
        self.presence.heard_from(envelope);
        Ok(accepted)
    }
}
