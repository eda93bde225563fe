//! The registry in one SQLite file: every trait of [`crate::registry`] implemented for
//! [`SqliteRegistry`], with the SQL (and everything only SQLite accepts: `?` placeholders,
//! `BEGIN IMMEDIATE`, `INSERT OR …`, pragmas) kept in this module.

mod audit;
mod broker_users;
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
use sqlx::sqlite::SqlitePool;
use sqlx::{Sqlite, Transaction};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

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
    /// See [`crate::DeviceInventory::device_changes`].
    device_changes: tokio::sync::broadcast::Sender<corral_model::DeviceId>,
    /// A password hash to verify against when a sign-in names no user (see `sign_in`).
    decoy_hash: tokio::sync::OnceCell<String>,
    /// See [`corral_services::BrokerUsers::broker_user_changes`].
    broker_user_changes: tokio::sync::broadcast::Sender<String>,
}

impl fmt::Debug for SqliteRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteRegistry").field("pool", &self.inner.pool).finish_non_exhaustive()
    }
}

impl SqliteRegistry {
    /// Opens (creating the file and its parent directory if missing) and migrates the registry.
    /// Durable (corral_sqlite::open): registry writes are rare and a token shown to a user must
    /// survive power loss; WAL keeps readers (auth cache misses, listings) off the writer's lock.
    pub async fn open(path: &Path) -> Result<SqliteRegistry, RegistryError> {
        Self::with_pool(corral_sqlite::open(path, MAX_CONNECTIONS).await?).await
    }

    /// A private in-memory registry, for tests and examples. Gone when the last clone drops.
    pub async fn open_in_memory() -> Result<SqliteRegistry, RegistryError> {
        Self::with_pool(corral_sqlite::open_in_memory().await?).await
    }

    async fn with_pool(pool: SqlitePool) -> Result<SqliteRegistry, RegistryError> {
        corral_sqlite::migrate(&pool, "registry", migrate::MIGRATIONS, crate::time::now_ms()).await?;
        Ok(SqliteRegistry {
            inner: Arc::new(Inner {
                pool,
                device_auth: AuthCache::new(),
                psk_auth: AuthCache::new(),
                api_auth: AuthCache::new(),
                presence: Presence::default(),
                credential_changes: tokio::sync::broadcast::channel(1024).0,
                device_changes: tokio::sync::broadcast::channel(4096).0,
                decoy_hash: tokio::sync::OnceCell::new(),
                broker_user_changes: tokio::sync::broadcast::channel(1024).0,
            }),
        })
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// See [`corral_sqlite::write_tx`]: writers queue rather than fail with SQLITE_BUSY.
    pub(crate) async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, RegistryError> {
        Ok(corral_sqlite::write_tx(&self.inner.pool).await?)
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
