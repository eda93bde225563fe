//! The ledger in one SQLite file, `<data-dir>/commands.db` ([`SqliteLedger`]), with the SQL kept
//! in this module. Durable (`corral_sqlite::open`): a command answered `201 Created` survives a
//! `kill -9` and still reaches its device.

mod rows;

use crate::CommandError;
use crate::ledger::{CommandFilter, CommandLedger};
use crate::model::{Answer, CommandState, NewCommand, TrackedCommand, new_id};
use async_trait::async_trait;
use corral_model::DeviceId;
use corral_sqlite::Migration;
use sqlx::SqlitePool;
use std::collections::BTreeMap;
use std::path::Path;

/// The ledger database's file name in the data directory.
pub const DATABASE_FILE: &str = "commands.db";

const MIGRATIONS: &[Migration] = &[Migration { version: 1, sql: include_str!("../../migrations/0001_init.sql") }];
const MAX_CONNECTIONS: u32 = 4;
/// The most commands one list answers.
pub const MAX_PAGE: usize = 1000;

/// The SQLite ledger. Clone it freely: clones share one pool.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
}

impl SqliteLedger {
    pub async fn open(path: &Path, now_ms: i64) -> Result<SqliteLedger, CommandError> {
        Self::with_pool(corral_sqlite::open(path, MAX_CONNECTIONS).await?, now_ms).await
    }

    /// A private in-memory ledger, for tests. Gone when the last clone drops.
    pub async fn open_in_memory() -> Result<SqliteLedger, CommandError> {
        Self::with_pool(corral_sqlite::open_in_memory().await?, 0).await
    }

    async fn with_pool(pool: SqlitePool, now_ms: i64) -> Result<SqliteLedger, CommandError> {
        corral_sqlite::migrate(&pool, "commands", MIGRATIONS, now_ms).await?;
        Ok(SqliteLedger { pool })
    }

    /// Checkpoints and closes the database; calls after this fail.
    pub async fn close(&self) {
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
        let mut tx = corral_sqlite::write_tx(&self.pool).await?;
        let Some(mut command) = rows::load(&mut tx, id).await?.filter(|c| c.device == *device) else {
            return Err(CommandError::not_found(id));
        };
        if command.state >= to {
            return Ok(None);
        }
        match to {
            CommandState::Sent => command.sent_at_ms = Some(now_ms),
            CommandState::Delivered => {
                // Delivered without a separate send (an HTTP poll): sent at the same moment.
                command.sent_at_ms.get_or_insert(now_ms);
                command.delivered_at_ms = Some(now_ms);
            }
            _ => unreachable!("advance carries commands to sent or delivered only"),
        }
        command.state = to;
        command.door = Some(door.to_string());
        rows::save_progress(&mut tx, &command).await?;
        tx.commit().await?;
        Ok(Some(command))
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
        let mut tx = corral_sqlite::write_tx(&self.pool).await?;
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
            if rows::insert(&mut tx, &command, key.as_deref()).await? {
                created.push(command);
            } else if let Some(first) = rows::load_by_key(&mut tx, key.as_deref().unwrap_or_default()).await? {
                // A retry of a create that happened: the first command, not another.
                created.push(first);
            }
        }
        tx.commit().await?;
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
        let mut tx = corral_sqlite::write_tx(&self.pool).await?;
        let Some(mut command) = rows::load(&mut tx, id).await?.filter(|c| c.device == *device) else {
            return Err(CommandError::not_found(id));
        };
        if command.state.is_final() {
            return Err(CommandError::Final(format!("command {id} is {} already; the answer changes nothing", command.state)));
        }
        // Answered means received: an ack that has not arrived yet (it travels apart from the
        // answer) or a door that cannot tell leaves its steps at the answer's time.
        command.sent_at_ms.get_or_insert(now_ms);
        command.delivered_at_ms.get_or_insert(now_ms);
        command.state = answer.state;
        command.finished_at_ms = Some(now_ms);
        command.response = answer.payload;
        command.reason = answer.reason;
        rows::save_outcome(&mut tx, &command).await?;
        tx.commit().await?;
        Ok(command)
    }

    async fn expire_due(&self, now_ms: i64) -> Result<Vec<TrackedCommand>, CommandError> {
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

    async fn next_expiry(&self) -> Result<Option<i64>, CommandError> {
        let mut conn = self.pool.acquire().await?;
        rows::next_expiry(&mut conn).await
    }
}
