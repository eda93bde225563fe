//! Merges in the order a device sent them. The broker runs the platform writes of one
//! connection's publishes concurrently (each waits for its own fsync) and acknowledges them in
//! order; that suits telemetry, whose readings carry their time, but not merge patches: a device
//! that reports `installing` then `succeeded` back to back must not end up `installing`. Each
//! merge of a device therefore waits for the one before it to finish. The order is taken when
//! the write is created, which the broker does for each publish as it arrives.

use crate::hooks::{PlatformWrite, PublishRefusal};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// A device's latest merge: its turn, and what tells when it has ended (its sender dropped).
type Latest = (u64, oneshot::Receiver<()>);

/// The last merge of each device that has one under way.
#[derive(Clone, Default)]
pub struct MergeOrder {
    last: Arc<Mutex<HashMap<String, Latest>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl MergeOrder {
    /// `merge` as a write that starts once the device's previous merge (of this kind) has ended.
    pub fn after_previous<F>(&self, device: &str, merge: F) -> PlatformWrite
    where
        F: Future<Output = Result<(), PublishRefusal>> + Send + 'static,
    {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (done, finished) = oneshot::channel();
        let previous = lock(&self.last).insert(device.to_string(), (turn, finished));
        let (last, device) = (self.last.clone(), device.to_string());
        Box::pin(async move {
            if let Some((_, previous)) = previous {
                // Ended either way: finished (Ok) or dropped with its connection (Err).
                let _ = previous.await;
            }
            let outcome = merge.await;
            drop(done);
            let mut last = lock(&last);
            // Forget the device unless a later merge has taken its place.
            if last.get(&device).is_some_and(|(t, _)| *t == turn) {
                last.remove(&device);
            }
            outcome
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_later_merge_waits_for_the_earlier_one_of_its_device_only() {
        let order = MergeOrder::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let merge = |name: &'static str, delay_ms: u64| {
            let log = log.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                lock(&log).push(name);
                Ok(())
            }
        };
        // The first merge of d1 is slow; the second is quick but must come after it. d2's merge
        // does not wait for d1's.
        let first = order.after_previous("d1", merge("d1-first", 50));
        let second = order.after_previous("d1", merge("d1-second", 0));
        let other = order.after_previous("d2", merge("d2", 10));
        let (a, b, c) = tokio::join!(second, other, first);
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert_eq!(*lock(&log), ["d2", "d1-first", "d1-second"]);
        assert!(lock(&order.last).is_empty(), "nothing is kept once every merge ended");
        // A merge whose predecessor was dropped unfinished (its connection went) still runs.
        let dropped = order.after_previous("d1", merge("never", 0));
        let after = order.after_previous("d1", merge("after-drop", 0));
        drop(dropped);
        assert!(after.await.is_ok());
        assert_eq!(lock(&log).last(), Some(&"after-drop"));
    }
}
