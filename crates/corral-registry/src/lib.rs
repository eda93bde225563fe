//! The asset registry: devices, profiles (device kinds), tenants, device tokens, API tokens with
//! roles and tenant scope, and the audit log, in one SQLite file.
//!
//! # Its place on the data path
//!
//! Every transport (HTTP ingest, MQTT, CoAP) asks the registry one question per request or
//! connection: *who is this, and may they?* [`Registry::authenticate_device`] answers for device
//! tokens, [`Registry::authenticate_api`] for API tokens, both from an in-memory cache that every
//! relevant mutation invalidates, so the hot path does no SQL. Transports then call
//! [`Registry::touch`] to note the device was heard from, again in memory only;
//! [`Registry::flush_last_seen`] persists that in batches. The REST API manages the registry
//! (create, list, patch, decommission devices; rotate tokens; API tokens; profiles; tenants),
//! always on behalf of a [`Principal`] whose [`Role`] and tenant scope every call checks. The SQL
//! engine reads it as the `devices` and `certificates` tables ([`DevicesTable`],
//! [`CertificatesTable`], its `corral_services::SystemTable`s); what devices report about
//! themselves arrives through its `corral_services::Reported`.
//!
//! # Main types
//!
//! - [`Registry`]: the handle (cheap to clone; a connection pool and the caches behind an `Arc`).
//! - [`Device`], [`NewDevice`], [`DevicePatch`], [`DeviceFilter`], [`DevicePage`],
//!   [`DeviceStatus`], [`DeviceIdentity`] (what a transport learns about a device).
//! - [`Principal`], [`Role`], [`ApiToken`], [`NewApiToken`]: people and programs.
//! - [`Profile`], [`AttributeDecl`], [`FieldDecl`], [`Tenant`], [`AuditEntry`].
//! - [`RegistryError`], mapped once to [`corral_model::WireError`] by [`RegistryError::to_wire`].
//!
//! Secrets (device tokens `cdt_…`, API tokens `cat_…`) are shown once and stored only as SHA-256.
//! Every mutation writes an audit row in the same transaction as the change.
//!
//! ```
//! use corral_model::DeviceId;
//! use corral_registry::{NewDevice, Registry, RegistryError};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let registry = Registry::open_in_memory().await?;
//! // First start: the administrator's token, printed once.
//! let admin_secret = registry.bootstrap_admin(None).await?.expect("fresh registry");
//! let admin = registry.authenticate_api(&admin_secret).await?;
//!
//! let new = NewDevice::new(DeviceId::new("truck-7").unwrap());
//! let (device, device_token) = registry.create_device(&admin, new).await?;
//! assert_eq!(device.tenant.as_str(), "default");
//!
//! // What an ingest endpoint does with the token a device presents.
//! let who = registry.authenticate_device(&device_token).await?;
//! assert_eq!(who.id, device.id);
//! # Ok::<(), RegistryError>(())
//! # }).unwrap();
//! ```

mod audit;
mod auth;
mod authn;
mod certificates;
mod device;
mod devices;
mod error;
mod migrate;
mod presence;
mod profiles;
mod psk;
mod search;
mod tables;
mod tenants;
mod time;
mod tokens;
mod users;

pub use audit::AuditEntry;
pub use auth::{DEVICE_TOKEN_PREFIX, Principal, Role};
pub use certificates::{AutoRegister, CertificateAuthority, DeviceCertificate, NewCertificateAuthority, NewDeviceCertificate};
pub use device::{Device, DeviceFilter, DeviceIdentity, DevicePage, DevicePatch, DeviceStatus, NewDevice};
pub use error::RegistryError;
pub use profiles::{AttributeDecl, FieldDecl, Profile, ValueType};
pub use psk::{PSK_MAX_BYTES, PSK_MIN_BYTES};
pub use tables::{CertificatesTable, DevicesTable};
pub use tenants::Tenant;
pub use tokens::{ApiToken, NewApiToken};
pub use users::{MIN_PASSWORD_CHARS, SESSION_HOURS, Session, User, generate_password};

use authn::AuthCache;
use presence::Presence;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a writer waits for another writer's lock before failing. Registry writes are short,
/// so seconds of waiting means something is badly wrong, not merely busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Readers run concurrently in WAL mode; SQLite serializes writers anyway, so a few suffice.
const MAX_CONNECTIONS: u32 = 4;

/// The registry handle. Clone it freely: all clones share one pool and one set of caches.
#[derive(Clone)]
pub struct Registry {
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
    /// See [`Registry::credential_changes`].
    credential_changes: tokio::sync::broadcast::Sender<corral_model::DeviceId>,
    /// A password hash to verify against when a sign-in names no user (see `sign_in`).
    decoy_hash: tokio::sync::OnceCell<String>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("pool", &self.inner.pool).finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens (creating the file and its parent directory if missing) and migrates the registry.
    pub async fn open(path: &Path) -> Result<Registry, RegistryError> {
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
    pub async fn open_in_memory() -> Result<Registry, RegistryError> {
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

    async fn with_pool(pool: SqlitePool) -> Result<Registry, RegistryError> {
        migrate::run(&pool).await?;
        Ok(Registry {
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

    /// Flushes `last_seen` and closes the pool (checkpointing the WAL). Call once at shutdown;
    /// calls on any clone afterwards fail.
    pub async fn close(&self) -> Result<(), RegistryError> {
        let flushed = self.flush_last_seen().await;
        self.inner.pool.close().await;
        flushed.map(|_| ())
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

/// Locks a std mutex, ignoring poisoning: every critical section here leaves its map consistent
/// (single inserts and removals), so a panic elsewhere must not take authentication down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
