//! Requests at an offered rate with a bound on how many are outstanding: request `k` (from 0) is
//! due at `start + k / rate`; while `in_flight` are outstanding the next one waits and goes out
//! late (its `due` says when the schedule wanted it). The REST requesters of the twin and command
//! benchmarks drive Corral this way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// When request `k` (from 0) is due.
pub fn due(start: Instant, k: usize, rate: f64) -> Instant {
    start + Duration::from_secs_f64(k as f64 / rate)
}

/// What the requests gave back, in the order they finished, and how many failed.
pub struct Done<T> {
    pub items: Vec<T>,
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Runs `count` requests, `request(k, due)` making the `k`th, each holding one of `in_flight`
/// places until it finishes; each gives back its item and, when it failed, why.
pub async fn requests<T, F, Fut>(count: usize, rate: f64, in_flight: usize, mut request: F) -> Done<T>
where
    F: FnMut(usize, Instant) -> Fut,
    Fut: Future<Output = (T, Option<String>)> + Send + 'static,
    T: Send + 'static,
{
    let gate = Arc::new(Semaphore::new(in_flight));
    let mut running = JoinSet::new();
    let start = Instant::now();
    for k in 0..count {
        let due = due(start, k, rate);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = gate.clone().acquire_owned().await else { break };
        let made = request(k, due);
        running.spawn(async move {
            let outcome = made.await;
            drop(permit);
            outcome
        });
    }
    let mut done = Done { items: Vec::with_capacity(count), failed: 0, first_error: None };
    while let Some(joined) = running.join_next().await {
        let Ok((item, error)) = joined else { continue };
        if let Some(e) = error {
            done.failed += 1;
            done.first_error.get_or_insert(e);
        }
        done.items.push(item);
    }
    done
}
