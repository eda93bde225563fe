//! The ledger in one SQLite file, `<data-dir>/commands.db` ([`SqliteLedger`]), with the SQL kept
//! in this module. Durable (`corral_sqlite::open`): a command answered `201 Created` survives a
//! `kill -9` and a power cut and still reaches its device; so do answers and expiries.
//!
//! The steps on the way (`sent`, `delivered`) are committed without an fsync of their own
//! ([`Durability::ProcessCrash`]): a `kill -9` cannot lose them, and the next fsynced commit
//! carries them to the disk. A power cut may take a command back from `delivered` to `sent` or
//! `queued`; it is then carried to its device again, as MQTT QoS 1 may carry anything twice, and
//! the device's answer is recorded once. This keeps the command round trip at two fsyncs (the
//! command, the answer) instead of four.
//!
//! Writers queue on one in-process lock rather than on SQLite's busy handler, which sleeps
//! (1, 2, 5, 10 … ms) between tries and so turned concurrent writes into millisecond stalls.

mod rows;

use crate::CommandError;
use crate::ledger::{CommandFilter, CommandLedger};
use crate::model::{Answer, CommandState, NewCommand, TrackedCommand, new_id};
use async_trait::async_trait;
use corral_model::DeviceId;
use corral_sqlite::{Durability, Migration};
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The ledger database's file name in the data directory.
pub const DATABASE_FILE: &str = "commands.db";

const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, sql: include_str!("../../migrations/0001_init.sql") },
    Migration { version: 2, sql: include_str!("../../migrations/0002_finished_index.sql") },
];
const MAX_CONNECTIONS: u32 = 4;
/// The most commands one list answers.
pub const MAX_PAGE: usize = 1000;

/// Where a create writes: one statement on its own, or a bulk job's transaction.
enum Insertion {
    Single(PoolConnection<Sqlite>),
    Many(sqlx::Transaction<'static, Sqlite>),
}

impl Insertion {
    fn conn(&mut self) -> &mut SqliteConnection {
        match self {
            Insertion::Single(conn) => conn,
            Insertion::Many(tx) => tx,
        }
    }
}

/// The SQLite ledger. Clone it freely: clones share the pools and the write lock.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    /// Reads, and the writes that must survive a power cut when they return.
    pool: SqlitePool,
    /// The steps on the way, committed without an fsync (see the module doc).
    progress: SqlitePool,
    /// Held by every write, on either pool.
    writer: Arc<Mutex<()>>,
}

impl SqliteLedger {
    pub async fn open(path: &Path, now_ms: i64) -> Result<SqliteLedger, CommandError> {
        let pool = corral_sqlite::open(path, MAX_CONNECTIONS).await?;
        corral_sqlite::migrate(&pool, "commands", MIGRATIONS, now_ms).await?;
        let progress = corral_sqlite::open_with(path, 1, Durability::ProcessCrash).await?;
        Ok(SqliteLedger { pool, progress, writer: Arc::default() })
    }

    /// A private in-memory ledger, for tests. Gone when the last clone drops.
    pub async fn open_in_memory() -> Result<SqliteLedger, CommandError> {
        let pool = corral_sqlite::open_in_memory().await?;
        corral_sqlite::migrate(&pool, "commands", MIGRATIONS, 0).await?;
        Ok(SqliteLedger { progress: pool.clone(), pool, writer: Arc::default() })
    }

    /// Checkpoints and closes the database; calls after this fail.
    pub async fn close(&self) {
        self.progress.close().await;
        self.pool.close().await;
    }

    /// Moves `id` to `to` if it is at an earlier step; the command after, or `None`.
    async fn advance(
        &self,
        device: &DeviceId,
        id: &str,
        to: CommandState,
        door: &str,
        now_ms: i64,
    ) -> Result<Option<TrackedCommand>, CommandError> {
        let _writing = self.writer.lock().await;
        let mut conn = self.progress.acquire().await?;
        rows::advance(&mut conn, device.as_str(), id, to, door, now_ms).await
    }
}

#[async_trait]
impl CommandLedger for SqliteLedger {
    async fn create(&self, new: NewCommand, now_ms: i64) -> Result<TrackedCommand, CommandError> {
        let mut created = self.create_many(vec![new], now_ms).await?;
        created.pop().ok_or_else(|| CommandError::Storage("no command created".into()))
    }

    async fn create_many(&self, new: Vec<NewCommand>, now_ms: i64) -> Result<Vec<TrackedCommand>, CommandError> {
        for command in &new {
            command.check().map_err(CommandError::BadInput)?;
        }
        let _writing = self.writer.lock().await;
        // One command is one statement, atomic on its own; a bulk job is one transaction.
        let mut tx = if new.len() == 1 {
            Insertion::Single(self.pool.acquire().await?)
        } else {
            Insertion::Many(corral_sqlite::write_tx(&self.pool).await?)
        };
        let mut created = Vec::with_capacity(new.len());
        for new in new {
            let command = TrackedCommand {
                id: new_id(),
                device: new.device,
                tenant: new.tenant,
                name: new.name,
                payload: new.payload,
                state: CommandState::Queued,
                created_at_ms: now_ms,
                sent_at_ms: None,
                delivered_at_ms: None,
                finished_at_ms: None,
                expires_at_ms: now_ms.saturating_add(new.timeout_ms),
                door: None,
                response: None,
                reason: None,
                job: new.job,
                created_by: new.created_by,
            };
            let key = new.key;
            if rows::insert(tx.conn(), &command, key.as_deref()).await? {
                created.push(command);
            } else if let Some(first) = rows::load_by_key(tx.conn(), key.as_deref().unwrap_or_default()).await? {
                // A retry of a create that happened: the first command, not another.
                created.push(first);
            }
        }
        if let Insertion::Many(tx) = tx {
            tx.commit().await?;
        }
        Ok(created)
    }

    async fn get(&self, id: &str, scope: Option<&str>) -> Result<TrackedCommand, CommandError> {
        let mut conn = self.pool.acquire().await?;
        rows::load(&mut conn, id)
            .await?
            .filter(|c| scope.is_none_or(|tenant| c.tenant.as_str() == tenant))
            .ok_or_else(|| CommandError::not_found(id))
    }

    async fn list(&self, filter: &CommandFilter, scope: Option<&str>) -> Result<Vec<TrackedCommand>, CommandError> {
        let mut conn = self.pool.acquire().await?;
        rows::list(&mut conn, filter, scope, filter.limit.clamp(1, MAX_PAGE)).await
    }

    async fn open_for(&self, device: &DeviceId) -> Result<Vec<TrackedCommand>, CommandError> {
        let mut conn = self.pool.acquire().await?;
        rows::open_for(&mut conn, device.as_str()).await
    }

    async fn mark_sent(
        &self,
        device: &DeviceId,
        id: &str,
        door: &str,
        now_ms: i64,
    ) -> Result<Option<TrackedCommand>, CommandError> {
        self.advance(device, id, CommandState::Sent, door, now_ms).await
    }

    async fn mark_delivered(
        &self,
        device: &DeviceId,
        id: &str,
        door: &str,
        now_ms: i64,
    ) -> Result<Option<TrackedCommand>, CommandError> {
        self.advance(device, id, CommandState::Delivered, door, now_ms).await
    }

    async fn answer(&self, device: &DeviceId, id: &str, answer: Answer, now_ms: i64) -> Result<TrackedCommand, CommandError> {
        let _writing = self.writer.lock().await;
        let mut conn = self.pool.acquire().await?;
        if let Some(answered) = rows::answer(&mut conn, device.as_str(), id, &answer, now_ms).await? {
            return Ok(answered);
        }
        match rows::load(&mut conn, id).await?.filter(|c| c.device == *device) {
            Some(command) => {
                Err(CommandError::Final(format!("command {id} is {} already; the answer changes nothing", command.state)))
            }
            None => Err(CommandError::not_found(id)),
        }
    }

    async fn expire_due(&self, now_ms: i64) -> Result<Vec<TrackedCommand>, CommandError> {
        let _writing = self.writer.lock().await;
        let mut tx = corral_sqlite::write_tx(&self.pool).await?;
        let mut expired = rows::due(&mut tx, now_ms).await?;
        for command in &mut expired {
            command.state = CommandState::Expired;
            command.finished_at_ms = Some(now_ms);
            command.reason = Some(match command.delivered_at_ms {
                Some(_) => "delivered, but the device did not answer in time".to_string(),
                None => "the device did not take it in time".to_string(),
            });
            rows::save_outcome(&mut tx, command).await?;
        }
        tx.commit().await?;
        Ok(expired)
    }

    async fn job_counts(&self, job: &str, scope: Option<&str>) -> Result<BTreeMap<CommandState, u64>, CommandError> {
        let mut conn = self.pool.acquire().await?;
        rows::job_counts(&mut conn, job, scope).await
    }

    async fn purge_finished(&self, before_ms: i64, limit: usize) -> Result<u64, CommandError> {
        let _writing = self.writer.lock().await;
        // Like the steps on the way, a purge need not survive a power cut: it is done again.
        let mut conn = self.progress.acquire().await?;
        rows::purge_finished(&mut conn, before_ms, limit).await
    }

    async fn next_expiry(&self) -> Result<Option<i64>, CommandError> {
        let mut conn = self.pool.acquire().await?;
        rows::next_expiry(&mut conn).await
    }
}
