//! The SQL for artifact, campaign and campaign-device rows. Every function takes the caller's
//! connection (a transaction for writes), so one logical change is one commit.

use crate::CampaignError;
use crate::artifact::Artifact;
use crate::book::WaveCount;
use crate::model::{Campaign, CampaignDevice, DeviceState};
use corral_model::{DeviceId, TenantId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

const ARTIFACT_COLUMNS: &str = "id, tenant, name, version, size, sha256, signature, public_key, signed_by, profiles, \
                                hardware, created_at_ms, created_by";
const CAMPAIGN_COLUMNS: &str = "id, tenant, name, rollout, target, dynamic, plan, state, reason, created_by, \
                                created_at_ms, started_at_ms, finished_at_ms";
const DEVICE_COLUMNS: &str = "campaign, device, tenant, wave, position, state, reason, command, notified_at_ms, updated_at_ms";
const IN_FLIGHT: &str = "('notified', 'downloading', 'downloaded', 'installing')";
const FAILURES: &str = "('failed', 'rolled-back', 'timed-out')";

fn storage(what: &str, e: impl std::fmt::Display) -> CampaignError {
    CampaignError::Storage(format!("{what}: {e}"))
}

fn json<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T, CampaignError> {
    serde_json::from_str(&row.try_get::<String, _>(column)?).map_err(|e| storage(column, e))
}

fn to_json(value: &impl Serialize) -> Result<String, CampaignError> {
    serde_json::to_string(value).map_err(|e| storage("json", e))
}

fn tenant(row: &SqliteRow) -> Result<TenantId, CampaignError> {
    TenantId::new(row.try_get::<String, _>("tenant")?).map_err(|e| storage("tenant", e))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn artifact(row: &SqliteRow) -> Result<Artifact, CampaignError> {
    Ok(Artifact {
        id: row.try_get("id")?,
        tenant: tenant(row)?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        size: count(row.try_get("size")?),
        sha256: row.try_get("sha256")?,
        signature: row.try_get("signature")?,
        public_key: row.try_get("public_key")?,
        signed_by: row.try_get("signed_by")?,
        profiles: json(row, "profiles")?,
        hardware: json(row, "hardware")?,
        created_at_ms: row.try_get("created_at_ms")?,
        created_by: row.try_get("created_by")?,
    })
}

fn campaign(row: &SqliteRow) -> Result<Campaign, CampaignError> {
    Ok(Campaign {
        id: row.try_get("id")?,
        tenant: tenant(row)?,
        name: row.try_get("name")?,
        rollout: json(row, "rollout")?,
        target: json(row, "target")?,
        dynamic: row.try_get::<i64, _>("dynamic")? != 0,
        plan: json(row, "plan")?,
        state: row.try_get::<String, _>("state")?.parse().map_err(|e: String| storage("state", e))?,
        reason: row.try_get("reason")?,
        created_by: row.try_get("created_by")?,
        created_at_ms: row.try_get("created_at_ms")?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
    })
}

fn device(row: &SqliteRow) -> Result<CampaignDevice, CampaignError> {
    Ok(CampaignDevice {
        campaign: row.try_get("campaign")?,
        device: DeviceId::new(row.try_get::<String, _>("device")?).map_err(|e| storage("device", e))?,
        tenant: tenant(row)?,
        wave: u32::try_from(row.try_get::<i64, _>("wave")?).map_err(|e| storage("wave", e))?,
        position: count(row.try_get("position")?),
        state: row.try_get::<String, _>("state")?.parse().map_err(|e: String| storage("state", e))?,
        reason: row.try_get("reason")?,
        command: row.try_get("command")?,
        notified_at_ms: row.try_get("notified_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `false` when the tenant has an artifact of that name and version already.
pub(crate) async fn insert_artifact(conn: &mut SqliteConnection, a: &Artifact) -> Result<bool, CampaignError> {
    let done = sqlx::query(&format!(
        "INSERT INTO artifacts ({ARTIFACT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (tenant, name, version) DO NOTHING"
    ))
    .bind(&a.id)
    .bind(a.tenant.as_str())
    .bind(&a.name)
    .bind(&a.version)
    .bind(i64::try_from(a.size).map_err(|e| storage("size", e))?)
    .bind(&a.sha256)
    .bind(&a.signature)
    .bind(&a.public_key)
    .bind(&a.signed_by)
    .bind(to_json(&a.profiles)?)
    .bind(to_json(&a.hardware)?)
    .bind(a.created_at_ms)
    .bind(&a.created_by)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn load_artifact(conn: &mut SqliteConnection, id: &str) -> Result<Option<Artifact>, CampaignError> {
    let row = sqlx::query(&format!("SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(artifact).transpose()
}

pub(crate) async fn list_artifacts(
    conn: &mut SqliteConnection,
    scope: Option<&str>,
    after: Option<&str>,
    n: usize,
) -> Result<Vec<Artifact>, CampaignError> {
    let rows = sqlx::query(&format!(
        "SELECT {ARTIFACT_COLUMNS} FROM artifacts
         WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR seq < (SELECT seq FROM artifacts WHERE id = ?2))
         ORDER BY seq DESC LIMIT ?3"
    ))
    .bind(scope)
    .bind(after)
    .bind(limit(n))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(artifact).collect()
}

pub(crate) async fn insert_campaign(conn: &mut SqliteConnection, c: &Campaign) -> Result<(), CampaignError> {
    sqlx::query(&format!("INSERT INTO campaigns ({CAMPAIGN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
        .bind(&c.id)
        .bind(c.tenant.as_str())
        .bind(&c.name)
        .bind(to_json(&c.rollout)?)
        .bind(to_json(&c.target)?)
        .bind(i64::from(c.dynamic))
        .bind(to_json(&c.plan)?)
        .bind(c.state.as_str())
        .bind(&c.reason)
        .bind(&c.created_by)
        .bind(c.created_at_ms)
        .bind(c.started_at_ms)
        .bind(c.finished_at_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn save_campaign(conn: &mut SqliteConnection, c: &Campaign) -> Result<(), CampaignError> {
    sqlx::query("UPDATE campaigns SET state = ?, reason = ?, started_at_ms = ?, finished_at_ms = ? WHERE id = ?")
        .bind(c.state.as_str())
        .bind(&c.reason)
        .bind(c.started_at_ms)
        .bind(c.finished_at_ms)
        .bind(&c.id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn load_campaign(conn: &mut SqliteConnection, id: &str) -> Result<Option<Campaign>, CampaignError> {
    let row = sqlx::query(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(campaign).transpose()
}

pub(crate) async fn list_campaigns(
    conn: &mut SqliteConnection,
    scope: Option<&str>,
    after: Option<&str>,
    n: usize,
) -> Result<Vec<Campaign>, CampaignError> {
    let rows = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns
         WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR seq < (SELECT seq FROM campaigns WHERE id = ?2))
         ORDER BY seq DESC LIMIT ?3"
    ))
    .bind(scope)
    .bind(after)
    .bind(limit(n))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(campaign).collect()
}

pub(crate) async fn open_campaigns(conn: &mut SqliteConnection) -> Result<Vec<Campaign>, CampaignError> {
    let rows = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns c
         WHERE state IN ('draft', 'running', 'paused')
            OR EXISTS (SELECT 1 FROM campaign_devices d WHERE d.campaign = c.id AND d.state IN {IN_FLIGHT})
         ORDER BY seq"
    ))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(campaign).collect()
}

pub(crate) async fn insert_device(conn: &mut SqliteConnection, d: &CampaignDevice) -> Result<(), CampaignError> {
    sqlx::query(&format!(
        "INSERT INTO campaign_devices ({DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (campaign, device) DO NOTHING"
    ))
    .bind(&d.campaign)
    .bind(d.device.as_str())
    .bind(d.tenant.as_str())
    .bind(i64::from(d.wave))
    .bind(i64::try_from(d.position).map_err(|e| storage("position", e))?)
    .bind(d.state.as_str())
    .bind(&d.reason)
    .bind(&d.command)
    .bind(d.notified_at_ms)
    .bind(d.updated_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn save_device(conn: &mut SqliteConnection, d: &CampaignDevice) -> Result<(), CampaignError> {
    sqlx::query(
        "UPDATE campaign_devices SET state = ?, reason = ?, command = ?, notified_at_ms = ?, updated_at_ms = ?
         WHERE campaign = ? AND device = ?",
    )
    .bind(d.state.as_str())
    .bind(&d.reason)
    .bind(&d.command)
    .bind(d.notified_at_ms)
    .bind(d.updated_at_ms)
    .bind(&d.campaign)
    .bind(d.device.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn campaign_devices(conn: &mut SqliteConnection, campaign: &str) -> Result<Vec<CampaignDevice>, CampaignError> {
    let rows = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM campaign_devices WHERE campaign = ? ORDER BY position"))
        .bind(campaign)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(device).collect()
}

pub(crate) async fn device_page(
    conn: &mut SqliteConnection,
    campaign: &str,
    state: Option<DeviceState>,
    after: Option<&DeviceId>,
    n: usize,
) -> Result<Vec<CampaignDevice>, CampaignError> {
    let rows = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM campaign_devices
         WHERE campaign = ?1 AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR device > ?3)
         ORDER BY device LIMIT ?4"
    ))
    .bind(campaign)
    .bind(state.map(DeviceState::as_str))
    .bind(after.map(DeviceId::as_str))
    .bind(limit(n))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(device).collect()
}

pub(crate) async fn all_devices(
    conn: &mut SqliteConnection,
    scope: Option<&str>,
    after: Option<(&str, &DeviceId)>,
    n: usize,
) -> Result<Vec<CampaignDevice>, CampaignError> {
    let rows = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM campaign_devices
         WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR (campaign, device) > (?2, ?3))
         ORDER BY campaign, device LIMIT ?4"
    ))
    .bind(scope)
    .bind(after.map(|(c, _)| c))
    .bind(after.map(|(_, d)| d.as_str()))
    .bind(limit(n))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(device).collect()
}

pub(crate) async fn counts(conn: &mut SqliteConnection, campaign: &str) -> Result<Vec<WaveCount>, CampaignError> {
    let rows = sqlx::query(
        "SELECT wave, state, count(*) AS n FROM campaign_devices WHERE campaign = ? GROUP BY wave, state ORDER BY wave, state",
    )
    .bind(campaign)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(WaveCount {
                wave: u32::try_from(row.try_get::<i64, _>("wave")?).map_err(|e| storage("wave", e))?,
                state: row.try_get::<String, _>("state")?.parse().map_err(|e: String| storage("state", e))?,
                devices: count(row.try_get("n")?),
            })
        })
        .collect()
}

pub(crate) async fn failure_reasons(
    conn: &mut SqliteConnection,
    campaign: &str,
    n: usize,
) -> Result<Vec<(String, u64)>, CampaignError> {
    let rows = sqlx::query(&format!(
        "SELECT coalesce(reason, '(no reason given)') AS reason, count(*) AS n FROM campaign_devices
         WHERE campaign = ? AND state IN {FAILURES} GROUP BY 1 ORDER BY n DESC, reason LIMIT ?"
    ))
    .bind(campaign)
    .bind(limit(n))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|row| Ok((row.try_get("reason")?, count(row.try_get("n")?)))).collect()
}
