//! The registry in one SQLite file: every trait of [`crate::registry`] implemented for
//! [`SqliteRegistry`], with the SQL (and everything only SQLite accepts: `?` placeholders,
//! `BEGIN IMMEDIATE`, `INSERT OR …`, pragmas) kept in this module.

mod audit;
mod certificates;
mod device_tokens;
mod devices;
mod migrate;
mod presence;
mod profiles;
mod psk;
mod search;
mod tenants;
mod tokens;
mod users;

use crate::cache::AuthCache;
use crate::presence::Presence;
use crate::{DeviceIdentity, LastSeen, Principal, Registry, RegistryError};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a writer waits for another writer's lock before failing. Registry writes are short,
/// so seconds of waiting means something is badly wrong, not merely busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Readers run concurrently in WAL mode; SQLite serializes writers anyway, so a few suffice.
const MAX_CONNECTIONS: u32 = 4;

/// The registry handle. Clone it freely: all clones share one pool and one set of caches.
#[derive(Clone)]
pub struct SqliteRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    device_auth: AuthCache<DeviceIdentity>,
    /// PSK identity → device and key: every request over DTLS is authorized again, so a
    /// status change takes effect at once, and this keeps that off the database.
    psk_auth: AuthCache<(DeviceIdentity, Vec<u8>)>,
    api_auth: AuthCache<Principal>,
    presence: Presence,
    /// See [`crate::DeviceTokens::credential_changes`].
    credential_changes: tokio::sync::broadcast::Sender<corral_model::DeviceId>,
    /// A password hash to verify against when a sign-in names no user (see `sign_in`).
    decoy_hash: tokio::sync::OnceCell<String>,
}

impl fmt::Debug for SqliteRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteRegistry").field("pool", &self.inner.pool).finish_non_exhaustive()
    }
}

impl SqliteRegistry {
    /// Opens (creating the file and its parent directory if missing) and migrates the registry.
    pub async fn open(path: &Path) -> Result<SqliteRegistry, RegistryError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| RegistryError::storage(format!("creating {}: {e}", parent.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL: readers (the auth cache misses, API listings) never wait for the writer.
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: registry writes are rare and a token shown to a user must survive power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Self::with_pool(pool).await
    }

    /// A private in-memory registry, for tests and examples. Gone when the last clone drops.
    pub async fn open_in_memory() -> Result<SqliteRegistry, RegistryError> {
        let options = SqliteConnectOptions::new().in_memory(true).foreign_keys(true).busy_timeout(BUSY_TIMEOUT);
        // One connection that never retires: an in-memory database lives exactly as long as the
        // connections holding it, and one connection also rules out shared-cache table locks.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::with_pool(pool).await
    }

    async fn with_pool(pool: SqlitePool) -> Result<SqliteRegistry, RegistryError> {
        migrate::run(&pool).await?;
        Ok(SqliteRegistry {
            inner: Arc::new(Inner {
                pool,
                device_auth: AuthCache::new(),
                psk_auth: AuthCache::new(),
                api_auth: AuthCache::new(),
                presence: Presence::default(),
                credential_changes: tokio::sync::broadcast::channel(1024).0,
                decoy_hash: tokio::sync::OnceCell::new(),
            }),
        })
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// A write transaction that takes SQLite's write lock up front. A deferred transaction that
    /// reads, then writes, fails with SQLITE_BUSY (without waiting) if another connection wrote in
    /// between; taking the lock first makes writers queue on the busy timeout instead.
    pub(crate) async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, RegistryError> {
        Ok(self.inner.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

#[async_trait]
impl Registry for SqliteRegistry {
    /// Flushes `last_seen` and closes the pool (checkpointing the WAL).
    async fn close(&self) -> Result<(), RegistryError> {
        let flushed = self.flush_last_seen().await;
        self.inner.pool.close().await;
        flushed.map(|_| ())
    }
}
