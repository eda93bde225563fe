//! Delivery: the [`Deliver`] trait a host implements to carry one entry to its target, and the
//! loop that decides *when* — due entries in parallel, outcomes recorded in batches, failures
//! retried with exponential backoff and jitter, and parked as `dead` after the attempt limit.

use crate::Outbox;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::de::DeserializeOwned;
use sqlx::Row;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How deliveries are retried; the host builds it from its own documented config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before an entry goes to the `dead` state.
    pub max_attempts: u32,
    /// Delay before the first retry, ms; doubles per attempt (with jitter) up to `max_ms`.
    pub base_ms: u64,
    /// Longest delay between retries, ms.
    pub max_ms: u64,
    /// Deliveries in flight at once (across all targets).
    pub concurrency: usize,
}

/// Carries an entry to its target: the host's half of the outbox (the rules send webhooks, NATS
/// and MQTT messages and device commands). One call is one attempt; the outbox retries.
pub trait Deliver: Send + Sync + 'static {
    /// What the host enqueued as [`crate::NewEntry::target`], read back from its JSON. An entry
    /// whose target no longer reads is logged and left pending, never attempted.
    type Target: DeserializeOwned + Send + Sync + 'static;

    /// The kind of target (`webhook`, `mqtt`...), the label of the per-kind counters.
    fn kind(&self, target: &Self::Target) -> &'static str;

    /// One attempt. `Ok` once the target has the entry.
    fn deliver(&self, entry: &Delivery<Self::Target>) -> impl Future<Output = Result<(), AttemptError>> + Send;
}

/// A due entry, as handed to [`Deliver::deliver`].
#[derive(Debug, Clone)]
pub struct Delivery<T> {
    pub id: i64,
    /// For the receiver to drop repeats (a crash between delivery and bookkeeping repeats one).
    pub idempotency_key: String,
    pub owner_kind: String,
    pub owner_id: i64,
    pub tenant: Option<String>,
    pub event: String,
    pub target: T,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at_ms: i64,
}

/// Why one delivery attempt failed. `retryable: false` (a target the policy denies, a malformed
/// URL) goes straight to the dead-letter; everything else is tried again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub message: String,
    pub retryable: bool,
}

impl AttemptError {
    pub fn retry(message: impl Into<String>) -> Self {
        AttemptError { message: message.into(), retryable: true }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        AttemptError { message: message.into(), retryable: false }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

type Outcome<T> = (Delivery<T>, Result<(), AttemptError>);

async fn attempt<D: Deliver>(deliver: &D, entry: Delivery<D::Target>) -> Outcome<D::Target> {
    let result = deliver.deliver(&entry).await;
    (entry, result)
}

impl Outbox {
    /// Delivers due entries until the process ends; one loop per outbox. Entries are attempted
    /// as they come due, up to `concurrency` at once, and a slow target does not hold up the
    /// others. Spawn it: `tokio::spawn(outbox.clone().run(deliverer))`.
    pub async fn run<D: Deliver>(self: Arc<Self>, deliver: D) {
        let deliver = Arc::new(deliver);
        let mut inflight = FuturesUnordered::new();
        let mut busy: HashSet<i64> = HashSet::new();
        loop {
            let room = self.retry.concurrency.saturating_sub(busy.len());
            let mut next_due = None;
            if room > 0 {
                match self.due::<D::Target>(room + busy.len()).await {
                    Ok((due, next)) => {
                        next_due = next;
                        let fresh: Vec<_> = due.into_iter().filter(|d| !busy.contains(&d.id)).take(room).collect();
                        for d in fresh {
                            busy.insert(d.id);
                            let deliver = deliver.clone();
                            inflight.push(async move { attempt(&*deliver, d).await });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "reading the outbox failed; retrying in 1 s"),
                }
            }
            let sleep = next_due.map_or(Duration::from_secs(1), |at: i64| {
                Duration::from_millis((at - self.clock.now_ms()).clamp(1, 1_000) as u64)
            });
            tokio::select! {
                Some(first) = inflight.next(), if !inflight.is_empty() => {
                    // Record every outcome that is ready in one transaction: at thousands of
                    // deliveries a second, one fsync each would be the bottleneck.
                    let mut done = vec![first];
                    while let Some(Some(more)) = futures::FutureExt::now_or_never(inflight.next()) {
                        done.push(more);
                    }
                    for (d, _) in &done {
                        busy.remove(&d.id);
                    }
                    if let Err(e) = self.record(&*deliver, done).await {
                        tracing::error!(error = %e, "recording deliveries failed; they will be delivered again");
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Attempts every entry due now (up to `concurrency`) once, waits for all, and records the
    /// outcomes; returns how many were attempted. [`Outbox::run`] does this continuously; a
    /// test or a tool drives delivery by hand with it, moving a `ManualClock` between calls.
    pub async fn deliver_due<D: Deliver>(&self, deliver: &D) -> Result<usize, sqlx::Error> {
        let (due, _) = self.due::<D::Target>(self.retry.concurrency.max(1)).await?;
        let done = futures::future::join_all(due.into_iter().map(|d| attempt(deliver, d))).await;
        let attempted = done.len();
        if attempted > 0 {
            self.record(deliver, done).await?;
        }
        Ok(attempted)
    }

    /// Up to `limit` due entries, and when the next not-yet-due one is.
    async fn due<T: DeserializeOwned>(&self, limit: usize) -> Result<(Vec<Delivery<T>>, Option<i64>), sqlx::Error> {
        let now = self.clock.now_ms();
        let rows = sqlx::query(
            "SELECT id, idempotency_key, owner_kind, owner_id, tenant, event, target, payload, attempts, created_at FROM outbox
             WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            let target: String = row.try_get("target")?;
            let Ok(target) = serde_json::from_str::<T>(&target) else {
                tracing::error!(id = row.try_get::<i64, _>("id")?, "unreadable outbox target; skipped");
                continue;
            };
            due.push(Delivery {
                id: row.try_get("id")?,
                idempotency_key: row.try_get("idempotency_key")?,
                owner_kind: row.try_get("owner_kind")?,
                owner_id: row.try_get("owner_id")?,
                tenant: row.try_get("tenant")?,
                event: row.try_get("event")?,
                target,
                payload: row.try_get("payload")?,
                attempts: row.try_get("attempts")?,
                created_at_ms: row.try_get("created_at")?,
            });
        }
        let next: Option<i64> =
            sqlx::query("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending' AND next_attempt_at > ?")
                .bind(now)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok((due, next))
    }

    /// Writes the outcomes of attempts in one transaction and counts them.
    async fn record<D: Deliver>(&self, deliver: &D, done: Vec<Outcome<D::Target>>) -> Result<(), sqlx::Error> {
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        for (d, result) in &done {
            let kind = deliver.kind(&d.target);
            match result {
                Ok(()) => {
                    sqlx::query("UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?, last_error = NULL WHERE id = ?")
                        .bind(now)
                        .bind(d.id)
                        .execute(&mut *tx)
                        .await?;
                    self.metrics.delivered(kind, (now - d.created_at_ms).max(0) as f64 / 1000.0);
                }
                Err(e) => {
                    let attempts = d.attempts + 1;
                    let dead = !e.retryable || attempts >= i64::from(self.retry.max_attempts);
                    let next = now + self.backoff_ms(attempts);
                    sqlx::query("UPDATE outbox SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?")
                        .bind(if dead { "dead" } else { "pending" })
                        .bind(attempts)
                        .bind(next)
                        .bind(&e.message)
                        .bind(d.id)
                        .execute(&mut *tx)
                        .await?;
                    self.metrics.failed(kind, dead);
                    if dead {
                        tracing::warn!(id = d.id, key = %d.idempotency_key, kind, attempts, error = %e, "delivery dead-lettered");
                    } else {
                        tracing::info!(id = d.id, kind, attempts, error = %e, "delivery failed; will retry");
                    }
                }
            }
        }
        tx.commit().await
    }

    /// Exponential backoff with "equal jitter": half the delay fixed, half random, so receivers
    /// coming back from an outage are not hit by every sender at the same instant.
    fn backoff_ms(&self, attempts: i64) -> i64 {
        let exp = attempts.clamp(1, 30) - 1;
        let full = self.retry.base_ms.saturating_mul(1u64 << exp).min(self.retry.max_ms).max(1);
        let half = full / 2;
        (half + rand::random_range(0..=full - half)) as i64
    }
}
