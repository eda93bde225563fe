//! The twins in one SQLite file, `<data-dir>/twins.db`: every trait of [`crate::store`]
//! implemented for [`SqliteTwins`], with the SQL kept in this module.

mod migrate;
mod rows;

use crate::merge::{Document, check_depth, check_size, merge_document};
use crate::store::{DesiredTwin, ProfileDefaults, ReportedTwin, TwinLifecycle, TwinReader, TwinStore};
use crate::twin::{DesiredChanges, DesiredPatch, FullReason, ProfileDesired, Twin, TwinDocument, effective_desired};
use crate::{TwinError, TwinSettings};
use async_trait::async_trait;
use corral_model::{DeviceId, TenantId};
use corral_services::{Clock, DesiredNotice, ReportedNotice};
use rows::TwinRow;
use sqlx::sqlite::SqlitePool;
use sqlx::{Sqlite, SqliteConnection, Transaction};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{Mutex, broadcast};

/// Readers run concurrently in WAL mode; SQLite serializes writers anyway, so a few suffice.
const MAX_CONNECTIONS: u32 = 4;
/// Desired-change notices a slow subscriber may fall behind by before it is told it lagged.
const CHANGES_CAPACITY: usize = 4096;

/// The twin store handle. Clone it freely: clones share one pool, one clock and one broadcast.
#[derive(Clone)]
pub struct SqliteTwins {
    inner: Arc<Inner>,
}

/// Lives as long as the last clone of the handle; dropping it closes the pool's connections.
struct Inner {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
    settings: TwinSettings,
    /// Sent to after each commit that changed a desired document; see [`DesiredTwin::subscribe`].
    changes: broadcast::Sender<DesiredNotice>,
    /// Sent to after each commit that changed a reported document; see
    /// [`ReportedTwin::reported_changes`].
    reported: broadcast::Sender<ReportedNotice>,
    /// Held by every reported merge, the only writer of the reported columns: the merge reads,
    /// then writes one statement, instead of holding SQLite's write lock across a transaction
    /// (four trips to the connection's thread become two).
    reporting: Mutex<()>,
}

impl fmt::Debug for SqliteTwins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteTwins").field("pool", &self.inner.pool).finish_non_exhaustive()
    }
}

impl SqliteTwins {
    /// Opens (creating the file and its parent directory if missing) and migrates the twin
    /// database at `path`, normally `<data-dir>/`[`crate::DATABASE_FILE`].
    pub async fn open(path: &Path, clock: Arc<dyn Clock>, settings: TwinSettings) -> Result<SqliteTwins, TwinError> {
        settings.validate()?;
        // Durable (corral_sqlite::open): a reported update is acknowledged to the device and a
        // desired change shown to the operator only after commit, and the commit survives power
        // loss; WAL lets a device's read of its twin never wait for the writer.
        Self::with_pool(corral_sqlite::open(path, MAX_CONNECTIONS).await?, clock, settings).await
    }

    /// A private in-memory store, for tests and examples. Gone when the last clone drops.
    pub async fn open_in_memory(clock: Arc<dyn Clock>, settings: TwinSettings) -> Result<SqliteTwins, TwinError> {
        settings.validate()?;
        Self::with_pool(corral_sqlite::open_in_memory().await?, clock, settings).await
    }

    async fn with_pool(pool: SqlitePool, clock: Arc<dyn Clock>, settings: TwinSettings) -> Result<SqliteTwins, TwinError> {
        corral_sqlite::migrate(&pool, "twin", migrate::MIGRATIONS, clock.now_ms()).await?;
        let changes = broadcast::channel(CHANGES_CAPACITY).0;
        let reported = broadcast::channel(CHANGES_CAPACITY).0;
        Ok(SqliteTwins { inner: Arc::new(Inner { pool, clock, settings, changes, reported, reporting: Mutex::new(()) }) })
    }

    /// See [`corral_sqlite::write_tx`]: writers queue rather than fail with SQLITE_BUSY.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, TwinError> {
        Ok(corral_sqlite::write_tx(&self.inner.pool).await?)
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn check_patch(&self, patch: &Document) -> Result<(), TwinError> {
        check_depth(patch, self.inner.settings.max_depth)?;
        check_size("patch", patch, &self.inner.settings).map(|_| ())
    }

    /// Recomputes `row`'s effective desired document from `defaults` and its overrides and writes
    /// it. When it changed, records the patch in the history and returns the notice to send
    /// after the commit.
    async fn store_desired(
        &self,
        conn: &mut SqliteConnection,
        row: &mut TwinRow,
        defaults: &Document,
        now_ms: i64,
    ) -> Result<Option<DesiredNotice>, TwinError> {
        let effective = effective_desired(defaults, &row.overrides);
        check_size("desired", &effective, &self.inner.settings)?;
        let changed = row.desired.advance(effective, now_ms);
        rows::save_desired(conn, row).await?;
        let Some(patch) = changed else { return Ok(None) };
        let entry = DesiredPatch { version: row.desired.version, patch, at_ms: now_ms };
        rows::append_history(conn, row.device.as_str(), &entry, self.inner.settings.history_per_device).await?;
        Ok(Some(DesiredNotice { device: row.device.clone(), version: row.desired.version }))
    }

    async fn defaults(conn: &mut SqliteConnection, profile: Option<&str>) -> Result<Document, TwinError> {
        match profile {
            Some(profile) => Ok(rows::load_profile(conn, profile).await?.desired.document),
            None => Ok(Document::new()),
        }
    }

    fn notify(&self, notices: impl IntoIterator<Item = DesiredNotice>) {
        for notice in notices {
            // No subscriber yet is fine: doors read the current version when a device connects.
            let _ = self.inner.changes.send(notice);
        }
    }

    /// Runs a desired-changing write on its own task. Its commit and its notices then happen
    /// together even if the caller's future is dropped mid-way (a client hanging up), so a
    /// committed change is never left unannounced.
    async fn detached<T, F>(&self, write: impl FnOnce(SqliteTwins) -> F) -> Result<T, TwinError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, TwinError>> + Send + 'static,
    {
        tokio::spawn(write(self.clone())).await.map_err(|e| TwinError::storage(format!("a twin write task failed: {e}")))?
    }

    async fn patch_desired_now(
        &self,
        device: DeviceId,
        scope: Option<String>,
        expected_version: Option<u64>,
        patch: Document,
    ) -> Result<TwinDocument, TwinError> {
        self.check_patch(&patch)?;
        let now_ms = self.now_ms();
        let mut tx = self.write_tx().await?;
        let mut row = rows::load(&mut tx, device.as_str())
            .await?
            .filter(|row| row.in_scope(scope.as_deref()))
            .ok_or_else(|| TwinError::not_found(device.as_str()))?;
        if let Some(expected) = expected_version
            && expected != row.desired.version
        {
            return Err(TwinError::Conflict { expected, current: row.desired.version });
        }
        merge_document(&mut row.overrides, &patch);
        let defaults = Self::defaults(&mut tx, row.profile.as_deref()).await?;
        let notice = self.store_desired(&mut tx, &mut row, &defaults, now_ms).await?;
        tx.commit().await?;
        self.notify(notice);
        Ok(row.desired)
    }

    async fn ensure_twin_now(&self, device: DeviceId, tenant: TenantId, profile: Option<String>) -> Result<Twin, TwinError> {
        // The common case, every read of a twin that exists and whose device kept its tenant and
        // profile: nothing to write, so no write lock and no fsync on a read. (A change of the
        // profile's defaults already rewrote the row, in `patch_profile_now`.)
        let mut conn = self.inner.pool.acquire().await?;
        if let Some(row) = rows::load(&mut conn, device.as_str()).await?
            && row.tenant == tenant
            && row.profile == profile
        {
            return Ok(row.into_twin());
        }
        drop(conn);
        let now_ms = self.now_ms();
        let mut tx = self.write_tx().await?;
        let mut row = match rows::load(&mut tx, device.as_str()).await? {
            Some(row) => row,
            None => {
                let row = TwinRow::new(device, tenant.clone(), None);
                rows::insert(&mut tx, &row, now_ms).await?;
                row
            }
        };
        row.tenant = tenant;
        row.profile = profile;
        let defaults = Self::defaults(&mut tx, row.profile.as_deref()).await?;
        let notice = self.store_desired(&mut tx, &mut row, &defaults, now_ms).await?;
        tx.commit().await?;
        self.notify(notice);
        Ok(row.into_twin())
    }

    async fn patch_profile_now(&self, profile: String, patch: Document) -> Result<ProfileDesired, TwinError> {
        self.check_patch(&patch)?;
        let now_ms = self.now_ms();
        let mut tx = self.write_tx().await?;
        let mut defaults = rows::load_profile(&mut tx, &profile).await?;
        let mut next = defaults.desired.document.clone();
        merge_document(&mut next, &patch);
        check_size("profile desired", &next, &self.inner.settings)?;
        if defaults.desired.advance(next, now_ms).is_none() {
            return Ok(defaults);
        }
        rows::save_profile(&mut tx, &defaults).await?;
        let mut notices = Vec::new();
        for device in rows::devices_of_profile(&mut tx, &profile).await? {
            let Some(mut row) = rows::load(&mut tx, &device).await? else { continue };
            let notice =
                self.store_desired(&mut tx, &mut row, &defaults.desired.document, now_ms).await.map_err(|e| match e {
                    TwinError::TooLarge(message) => TwinError::TooLarge(format!("device {device}: {message}")),
                    other => other,
                })?;
            notices.extend(notice);
        }
        tx.commit().await?;
        self.notify(notices);
        Ok(defaults)
    }
}

#[async_trait]
impl TwinLifecycle for SqliteTwins {
    async fn ensure_twin(&self, device: &DeviceId, tenant: &TenantId, profile: Option<&str>) -> Result<Twin, TwinError> {
        let (device, tenant, profile) = (device.clone(), tenant.clone(), profile.map(str::to_string));
        self.detached(|store| async move { store.ensure_twin_now(device, tenant, profile).await }).await
    }

    async fn remove_twin(&self, device: &DeviceId) -> Result<bool, TwinError> {
        let mut tx = self.write_tx().await?;
        let removed = rows::remove(&mut tx, device.as_str()).await?;
        tx.commit().await?;
        Ok(removed)
    }
}

#[async_trait]
impl TwinReader for SqliteTwins {
    async fn twin(&self, device: &DeviceId, scope: Option<&str>) -> Result<Twin, TwinError> {
        let mut conn = self.inner.pool.acquire().await?;
        rows::load(&mut conn, device.as_str())
            .await?
            .filter(|row| row.in_scope(scope))
            .map(TwinRow::into_twin)
            .ok_or_else(|| TwinError::not_found(device.as_str()))
    }

    async fn list_twins(&self, scope: Option<&str>, after: Option<&DeviceId>, limit: usize) -> Result<Vec<Twin>, TwinError> {
        let mut conn = self.inner.pool.acquire().await?;
        let rows = rows::page(&mut conn, scope, after.map(DeviceId::as_str), limit).await?;
        Ok(rows.into_iter().map(TwinRow::into_twin).collect())
    }
}

#[async_trait]
impl DesiredTwin for SqliteTwins {
    async fn patch_desired(
        &self,
        device: &DeviceId,
        scope: Option<&str>,
        expected_version: Option<u64>,
        patch: &Document,
    ) -> Result<TwinDocument, TwinError> {
        let (device, scope, patch) = (device.clone(), scope.map(str::to_string), patch.clone());
        self.detached(|store| async move { store.patch_desired_now(device, scope, expected_version, patch).await }).await
    }

    async fn changes_since(&self, device: &DeviceId, since: u64) -> Result<DesiredChanges, TwinError> {
        // One read transaction: the version and the history come from the same snapshot.
        let mut tx = self.inner.pool.begin().await?;
        let row = rows::load(&mut tx, device.as_str()).await?.ok_or_else(|| TwinError::not_found(device.as_str()))?;
        let current = row.desired.version;
        if since > current {
            return Ok(DesiredChanges::Full { desired: row.desired, reason: FullReason::AheadOfServer });
        }
        let patches = rows::history_since(&mut tx, device.as_str(), since).await?;
        tx.commit().await?;
        // Complete only if it runs unbroken from `since + 1` to the current version.
        let complete = u64::try_from(patches.len()).is_ok_and(|n| n == current - since)
            && patches.first().is_none_or(|first| first.version == since + 1);
        if complete {
            Ok(DesiredChanges::Patches { version: current, patches })
        } else {
            Ok(DesiredChanges::Full { desired: row.desired, reason: FullReason::BeyondHistory })
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<DesiredNotice> {
        self.inner.changes.subscribe()
    }
}

#[async_trait]
impl ReportedTwin for SqliteTwins {
    async fn patch_reported(&self, device: &DeviceId, patch: &Document) -> Result<TwinDocument, TwinError> {
        self.check_patch(patch)?;
        let _merging = self.inner.reporting.lock().await;
        let now_ms = self.now_ms();
        let mut conn = self.inner.pool.acquire().await?;
        let mut row = rows::load(&mut conn, device.as_str()).await?.ok_or_else(|| TwinError::not_found(device.as_str()))?;
        let read = row.reported.version;
        let mut next = row.reported.document.clone();
        merge_document(&mut next, patch);
        check_size("reported", &next, &self.inner.settings)?;
        if row.reported.advance(next, now_ms).is_some() {
            // Only the twin's removal can come between the read and the write.
            if !rows::save_reported(&mut conn, &row, read).await? {
                return Err(TwinError::not_found(device.as_str()));
            }
            // Nobody following reports is fine: a follower reads the documents when it starts.
            let notice = ReportedNotice { device: device.clone(), version: row.reported.version, patch: Arc::new(patch.clone()) };
            let _ = self.inner.reported.send(notice);
        }
        Ok(row.reported)
    }

    fn reported_changes(&self) -> broadcast::Receiver<ReportedNotice> {
        self.inner.reported.subscribe()
    }
}

#[async_trait]
impl ProfileDefaults for SqliteTwins {
    async fn profile_defaults(&self, profile: &str) -> Result<ProfileDesired, TwinError> {
        let mut conn = self.inner.pool.acquire().await?;
        rows::load_profile(&mut conn, profile).await
    }

    async fn patch_profile_defaults(&self, profile: &str, patch: &Document) -> Result<ProfileDesired, TwinError> {
        let (profile, patch) = (profile.to_string(), patch.clone());
        self.detached(|store| async move { store.patch_profile_now(profile, patch).await }).await
    }
}

#[async_trait]
impl TwinStore for SqliteTwins {
    async fn close(&self) {
        self.inner.pool.close().await;
    }
}
