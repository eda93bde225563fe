//! The SQL for twin rows, history and profile defaults. Every function takes the caller's
//! connection (a transaction, usually), so one logical change is one commit.

use crate::TwinError;
use crate::merge::Document;
use crate::twin::{DesiredPatch, ProfileDesired, Twin, TwinDocument, delta};
use corral_model::{DeviceId, TenantId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

/// A twin as stored: the effective desired side, the device's own overrides, the reported side.
#[derive(Debug, Clone)]
pub(crate) struct TwinRow {
    pub device: DeviceId,
    pub tenant: TenantId,
    pub profile: Option<String>,
    pub desired: TwinDocument,
    pub overrides: Document,
    pub reported: TwinDocument,
}

impl TwinRow {
    pub fn new(device: DeviceId, tenant: TenantId, profile: Option<String>) -> Self {
        TwinRow {
            device,
            tenant,
            profile,
            desired: TwinDocument::default(),
            overrides: Document::new(),
            reported: TwinDocument::default(),
        }
    }

    /// Whether a caller with tenant scope `scope` may see this twin.
    pub fn in_scope(&self, scope: Option<&str>) -> bool {
        scope.is_none_or(|tenant| tenant == self.tenant.as_str())
    }

    pub fn into_twin(self) -> Twin {
        let delta = delta(&self.desired.document, &self.reported.document);
        Twin {
            device: self.device,
            tenant: self.tenant,
            profile: self.profile,
            desired: self.desired,
            desired_overrides: self.overrides,
            reported: self.reported,
            delta,
        }
    }
}

pub(crate) async fn load(conn: &mut SqliteConnection, device: &str) -> Result<Option<TwinRow>, TwinError> {
    let row = sqlx::query(
        "SELECT device, tenant, profile, desired, desired_overrides, desired_version, desired_times,
                reported, reported_version, reported_times
         FROM twins WHERE device = ?",
    )
    .bind(device)
    .fetch_optional(conn)
    .await?;
    row.map(|row| decode(&row)).transpose()
}

/// Up to `limit` rows after device `after` in device order, of `tenant` only when given.
pub(crate) async fn page(
    conn: &mut SqliteConnection,
    tenant: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<TwinRow>, TwinError> {
    let rows = sqlx::query(
        "SELECT device, tenant, profile, desired, desired_overrides, desired_version, desired_times,
                reported, reported_version, reported_times
         FROM twins WHERE (?1 IS NULL OR tenant = ?1) AND device > ?2 ORDER BY device LIMIT ?3",
    )
    .bind(tenant)
    .bind(after.unwrap_or(""))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?;
    rows.iter().map(decode).collect()
}

fn decode(row: &SqliteRow) -> Result<TwinRow, TwinError> {
    let device: String = row.try_get("device")?;
    let tenant: String = row.try_get("tenant")?;
    Ok(TwinRow {
        device: DeviceId::new(device).map_err(|e| TwinError::storage(e.to_string()))?,
        tenant: TenantId::new(tenant).map_err(|e| TwinError::storage(e.to_string()))?,
        profile: row.try_get("profile")?,
        desired: TwinDocument {
            document: from_text(row.try_get("desired")?)?,
            version: version(row.try_get("desired_version")?),
            updated_at_ms: from_text(row.try_get("desired_times")?)?,
        },
        overrides: from_text(row.try_get("desired_overrides")?)?,
        reported: TwinDocument {
            document: from_text(row.try_get("reported")?)?,
            version: version(row.try_get("reported_version")?),
            updated_at_ms: from_text(row.try_get("reported_times")?)?,
        },
    })
}

pub(crate) async fn insert(conn: &mut SqliteConnection, row: &TwinRow, now_ms: i64) -> Result<(), TwinError> {
    sqlx::query(
        "INSERT INTO twins (device, tenant, profile, desired, desired_overrides, desired_version, desired_times,
                            reported, reported_version, reported_times, created_at_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(row.device.as_str())
    .bind(row.tenant.as_str())
    .bind(row.profile.as_deref())
    .bind(to_text(&row.desired.document)?)
    .bind(to_text(&row.overrides)?)
    .bind(db_version(row.desired.version))
    .bind(to_text(&row.desired.updated_at_ms)?)
    .bind(to_text(&row.reported.document)?)
    .bind(db_version(row.reported.version))
    .bind(to_text(&row.reported.updated_at_ms)?)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the desired side, the overrides, the tenant and the profile.
pub(crate) async fn save_desired(conn: &mut SqliteConnection, row: &TwinRow) -> Result<(), TwinError> {
    sqlx::query(
        "UPDATE twins SET tenant = ?, profile = ?, desired = ?, desired_overrides = ?, desired_version = ?,
                          desired_times = ?
         WHERE device = ?",
    )
    .bind(row.tenant.as_str())
    .bind(row.profile.as_deref())
    .bind(to_text(&row.desired.document)?)
    .bind(to_text(&row.overrides)?)
    .bind(db_version(row.desired.version))
    .bind(to_text(&row.desired.updated_at_ms)?)
    .bind(row.device.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the reported side if it is still at version `read` (as the merge read it); `false` when
/// it is not, or the twin is gone.
pub(crate) async fn save_reported(conn: &mut SqliteConnection, row: &TwinRow, read: u64) -> Result<bool, TwinError> {
    let done = sqlx::query(
        "UPDATE twins SET reported = ?, reported_version = ?, reported_times = ? WHERE device = ? AND reported_version = ?",
    )
    .bind(to_text(&row.reported.document)?)
    .bind(db_version(row.reported.version))
    .bind(to_text(&row.reported.updated_at_ms)?)
    .bind(row.device.as_str())
    .bind(db_version(read))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn remove(conn: &mut SqliteConnection, device: &str) -> Result<bool, TwinError> {
    Ok(sqlx::query("DELETE FROM twins WHERE device = ?").bind(device).execute(conn).await?.rows_affected() > 0)
}

/// Records the patch that produced `patch.version` and forgets the device's patches older than
/// the newest `keep`, so the history of a busy device stays bounded.
pub(crate) async fn append_history(
    conn: &mut SqliteConnection,
    device: &str,
    patch: &DesiredPatch,
    keep: usize,
) -> Result<(), TwinError> {
    sqlx::query("INSERT INTO desired_history (device, version, patch, at_ms) VALUES (?, ?, ?, ?)")
        .bind(device)
        .bind(db_version(patch.version))
        .bind(to_text(&patch.patch)?)
        .bind(patch.at_ms)
        .execute(&mut *conn)
        .await?;
    let oldest_kept = db_version(patch.version).saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX)) + 1;
    sqlx::query("DELETE FROM desired_history WHERE device = ? AND version < ?")
        .bind(device)
        .bind(oldest_kept)
        .execute(conn)
        .await?;
    Ok(())
}

/// The kept patches after version `since`, oldest first.
pub(crate) async fn history_since(conn: &mut SqliteConnection, device: &str, since: u64) -> Result<Vec<DesiredPatch>, TwinError> {
    let rows = sqlx::query("SELECT version, patch, at_ms FROM desired_history WHERE device = ? AND version > ? ORDER BY version")
        .bind(device)
        .bind(db_version(since))
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(DesiredPatch {
                version: version(row.try_get("version")?),
                patch: from_text(row.try_get("patch")?)?,
                at_ms: row.try_get("at_ms")?,
            })
        })
        .collect()
}

pub(crate) async fn devices_of_profile(conn: &mut SqliteConnection, profile: &str) -> Result<Vec<String>, TwinError> {
    let rows = sqlx::query("SELECT device FROM twins WHERE profile = ? ORDER BY device").bind(profile).fetch_all(conn).await?;
    rows.iter().map(|row| Ok(row.try_get("device")?)).collect()
}

/// The profile's defaults, empty at version 0 when it has none.
pub(crate) async fn load_profile(conn: &mut SqliteConnection, profile: &str) -> Result<ProfileDesired, TwinError> {
    let row = sqlx::query("SELECT desired, version, times FROM profile_defaults WHERE profile = ?")
        .bind(profile)
        .fetch_optional(conn)
        .await?;
    let desired = match row {
        None => TwinDocument::default(),
        Some(row) => TwinDocument {
            document: from_text(row.try_get("desired")?)?,
            version: version(row.try_get("version")?),
            updated_at_ms: from_text(row.try_get("times")?)?,
        },
    };
    Ok(ProfileDesired { profile: profile.to_string(), desired })
}

pub(crate) async fn save_profile(conn: &mut SqliteConnection, profile: &ProfileDesired) -> Result<(), TwinError> {
    sqlx::query(
        "INSERT INTO profile_defaults (profile, desired, version, times) VALUES (?, ?, ?, ?)
         ON CONFLICT (profile) DO UPDATE SET desired = excluded.desired, version = excluded.version, times = excluded.times",
    )
    .bind(&profile.profile)
    .bind(to_text(&profile.desired.document)?)
    .bind(db_version(profile.desired.version))
    .bind(to_text(&profile.desired.updated_at_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}

fn to_text(value: &impl Serialize) -> Result<String, TwinError> {
    serde_json::to_string(value).map_err(|e| TwinError::storage(format!("encoding a twin document: {e}")))
}

fn from_text<T: DeserializeOwned>(text: String) -> Result<T, TwinError> {
    serde_json::from_str(&text).map_err(|e| TwinError::storage(format!("a stored twin document does not decode: {e}")))
}

/// Versions are `u64` in the API and `INTEGER` (i64) in SQLite; neither end comes near 2^63.
fn version(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

fn db_version(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}
