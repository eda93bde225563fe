//! [`Outbox`]: the queue's handle. Writers enqueue inside their own transaction, the host's API
//! lists and retries entries, the delivery loop (`delivery.rs`) drains it.

use crate::delivery::RetryPolicy;
use crate::entry::{ListFilter, NewEntry, Record, Scope, State};
use crate::error::OutboxError;
use crate::metrics::{MetricNames, Metrics};
use corral_services::Clock;
use corral_services::metrics::Exposition;
use serde::Serialize;
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::Notify;

/// One durable queue in a host's SQLite database, with its retry policy, clock and counters.
/// Shared (`Arc`) by the host's writers (enqueue), its API (list, retry) and the delivery loop
/// ([`Outbox::run`]); lives as long as the host. It holds no lock across an await: SQLite
/// serializes the writes, and the counters are atomics.
pub struct Outbox {
    pub(crate) pool: SqlitePool,
    pub(crate) retry: RetryPolicy,
    /// When entries are due and delivered: the host's clock, so tests move time by hand.
    pub(crate) clock: Arc<dyn Clock>,
    /// Wakes the delivery loop when entries were committed or revived.
    pub(crate) wake: Notify,
    pub(crate) metrics: Metrics,
}

impl Outbox {
    /// The outbox in `pool`'s database, whose `outbox` table the host has created
    /// ([`crate::schema::create`]). Counts the pending entries for `/metrics`.
    pub async fn open(
        pool: SqlitePool,
        retry: RetryPolicy,
        clock: Arc<dyn Clock>,
        names: &'static MetricNames,
    ) -> Result<Outbox, OutboxError> {
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetch_one(&pool).await?;
        Ok(Outbox { pool, retry, clock, wake: Notify::new(), metrics: Metrics::new(names, pending) })
    }

    /// Adds `entries` in the caller's transaction, so they commit (or roll back) with the
    /// change that caused them. An entry whose key is already there is dropped. After the
    /// commit, call [`Outbox::enqueued`]. Returns how many were added.
    pub async fn enqueue<T: Serialize>(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        entries: &[NewEntry<T>],
    ) -> Result<u64, OutboxError> {
        let now = self.clock.now_ms();
        let mut added = 0;
        for e in entries {
            let target = serde_json::to_string(&e.target).map_err(OutboxError::Target)?;
            added += sqlx::query(
                "INSERT INTO outbox (idempotency_key, owner_kind, owner_id, tenant, event, target, payload, state, next_attempt_at, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&e.idempotency_key)
            .bind(e.owner_kind)
            .bind(e.owner_id)
            .bind(&e.tenant)
            .bind(&e.event)
            .bind(target)
            .bind(&e.payload)
            .bind(now)
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
        Ok(added)
    }

    /// Tells the outbox that a transaction holding `count` new entries committed: they count as
    /// pending and the delivery loop wakes for them.
    pub fn enqueued(&self, count: u64) {
        if count > 0 {
            self.metrics.pending.fetch_add(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// Entries, newest first.
    pub async fn list(&self, f: &ListFilter<'_>) -> Result<Vec<Record>, OutboxError> {
        let rows = sqlx::query(
            "SELECT * FROM outbox
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR owner_kind = ?2) AND (?3 IS NULL OR tenant = ?3)
               AND (?4 IS NULL OR id < ?4)
             ORDER BY id DESC LIMIT ?5",
        )
        .bind(f.state.map(State::as_str))
        .bind(f.scope.owner_kind)
        .bind(f.scope.tenant)
        .bind(f.before)
        .bind(f.limit.clamp(1, 1_000) as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(Record::from_row).collect::<Result<_, _>>()?)
    }

    /// One entry, if it is in `scope`.
    pub async fn get(&self, id: i64, scope: Scope<'_>) -> Result<Record, OutboxError> {
        let row =
            sqlx::query("SELECT * FROM outbox WHERE id = ?1 AND (?2 IS NULL OR owner_kind = ?2) AND (?3 IS NULL OR tenant = ?3)")
                .bind(id)
                .bind(scope.owner_kind)
                .bind(scope.tenant)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(Record::from_row).transpose()?.ok_or(OutboxError::NotFound(id))
    }

    /// Puts a dead (or pending) entry back in line for immediate delivery, with a fresh attempt
    /// budget, and wakes the delivery loop. A delivered entry is refused.
    pub async fn retry(&self, id: i64, scope: Scope<'_>) -> Result<Record, OutboxError> {
        let entry = self.get(id, scope).await?;
        if entry.state == State::Delivered {
            return Err(OutboxError::AlreadyDelivered(id));
        }
        sqlx::query("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ? WHERE id = ?")
            .bind(self.clock.now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if entry.state == State::Dead {
            self.metrics.pending.fetch_add(1, Ordering::Relaxed);
        }
        self.wake.notify_one();
        self.get(id, scope).await
    }

    /// Entries waiting for delivery, retries included (the `pending` gauge).
    pub fn pending(&self) -> i64 {
        self.metrics.pending.load(Ordering::Relaxed).max(0)
    }

    /// Writes the `pending` gauge. Separate from [`Outbox::render_deliveries`] so a host keeps
    /// its `/metrics` families in the order it has always shown them.
    pub fn render_pending(&self, e: &mut Exposition) {
        self.metrics.render_pending(e);
    }

    /// Writes the per-kind delivered, failed-attempt and dead counters and the latency histogram.
    pub fn render_deliveries(&self, e: &mut Exposition) {
        self.metrics.render_deliveries(e);
    }
}
