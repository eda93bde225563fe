//! Write groups: many small requests (an MQTT message, a 10-row HTTP post) share one WAL record
//! and one trip through the buffer lock, instead of each paying a task, a WAL round trip and a
//! lock of its own.
//!
//! A request that passed its own checks (schema, days, room) queues here. If no leader is running
//! it starts one; the leader takes everything queued (up to [`GROUP_MAX_ROWS`]) as one group and
//! appends it in a task of its own, while newer requests queue for the next group. Up to
//! [`GROUPS_IN_FLIGHT`] groups are appended at once, so one group's fsync does not stall the
//! next. A group is one WAL record, so it is all or nothing; only storage can fail it (disk
//! full, a WAL error), and then every request in it gets the same error and nothing of it was
//! stored. Each request still returns only after the fsync that holds it.

use super::{Store, StoreError};
use corral_model::Batch;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, oneshot};

/// Rows one group takes at most (a single larger request forms a group of its own).
const GROUP_MAX_ROWS: usize = 64 * 1024;
const GROUPS_IN_FLIGHT: usize = 4;

/// Where a request learns its group's fate; its batches come back with success.
type Done = oneshot::Sender<Result<Vec<Batch>, StoreError>>;

pub(super) struct Groups {
    queue: Mutex<Queue>,
    in_flight: Arc<Semaphore>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(Vec<Batch>, Done)>,
    /// A leader task is running; it clears this (under the same lock) when it finds no work.
    leading: bool,
}

impl Default for Groups {
    fn default() -> Self {
        Groups { queue: Mutex::default(), in_flight: Arc::new(Semaphore::new(GROUPS_IN_FLIGHT)) }
    }
}

impl Store {
    pub(super) async fn append_grouped(&self, batches: Vec<Batch>) -> Result<Vec<Batch>, StoreError> {
        let (done, result) = oneshot::channel();
        let start_leader = {
            let mut queue = self.queue();
            queue.waiting.push((batches, done));
            !std::mem::replace(&mut queue.leading, true)
        };
        if start_leader {
            tokio::spawn(self.clone().lead());
        }
        result.await.map_err(|_| StoreError::ShuttingDown)?
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.groups.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands out groups until the queue is empty.
    async fn lead(self) {
        loop {
            let Ok(permit) = self.inner.groups.in_flight.clone().acquire_owned().await else { return };
            let group = {
                let mut queue = self.queue();
                if queue.waiting.is_empty() {
                    queue.leading = false;
                    return;
                }
                take_group(&mut queue.waiting)
            };
            let store = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let (requests, done): (Vec<Vec<Batch>>, Vec<Done>) = group.into_iter().unzip();
                let result = store.append_and_buffer(&requests).await;
                for (batches, done) in requests.into_iter().zip(done) {
                    let _ = done.send(result.as_ref().map(|_| batches).map_err(shared));
                }
            });
        }
    }
}

/// The oldest waiting requests up to [`GROUP_MAX_ROWS`] rows (at least one request).
fn take_group(waiting: &mut Vec<(Vec<Batch>, Done)>) -> Vec<(Vec<Batch>, Done)> {
    let mut rows = 0;
    let count = waiting
        .iter()
        .take_while(|(batches, _)| {
            let first = rows == 0;
            rows += batches.iter().map(|b| b.rows.len()).sum::<usize>();
            first || rows <= GROUP_MAX_ROWS
        })
        .count();
    waiting.drain(..count).collect()
}

/// A group's storage error, for each of its requests.
fn shared(e: &StoreError) -> StoreError {
    match e {
        StoreError::DiskFull => StoreError::DiskFull,
        StoreError::ShuttingDown => StoreError::ShuttingDown,
        other => StoreError::Io { context: "appending to the WAL".into(), source: std::io::Error::other(other.to_string()) },
    }
}
