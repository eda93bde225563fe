//! The SQL for command rows. Every function takes the caller's connection (a transaction for
//! writes), so one logical change is one commit.

use crate::CommandError;
use crate::ledger::CommandFilter;
use crate::model::{CommandState, TrackedCommand};
use corral_model::{DeviceId, TenantId};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use std::collections::BTreeMap;

const COLUMNS: &str = "id, device, tenant, name, payload, state, created_at_ms, sent_at_ms, delivered_at_ms, \
                       finished_at_ms, expires_at_ms, door, response, reason, job, created_by";
const OPEN: &str = "state IN ('queued', 'sent', 'delivered')";

fn storage(what: &str, e: impl std::fmt::Display) -> CommandError {
    CommandError::Storage(format!("{what}: {e}"))
}

fn decode(row: &SqliteRow) -> Result<TrackedCommand, CommandError> {
    let json = |column: &str| -> Result<Option<Value>, CommandError> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| storage(column, e))).transpose()
    };
    Ok(TrackedCommand {
        id: row.try_get("id")?,
        device: DeviceId::new(row.try_get::<String, _>("device")?).map_err(|e| storage("device", e))?,
        tenant: TenantId::new(row.try_get::<String, _>("tenant")?).map_err(|e| storage("tenant", e))?,
        name: row.try_get("name")?,
        payload: json("payload")?.unwrap_or(Value::Null),
        state: row.try_get::<String, _>("state")?.parse().map_err(|e: String| storage("state", e))?,
        created_at_ms: row.try_get("created_at_ms")?,
        sent_at_ms: row.try_get("sent_at_ms")?,
        delivered_at_ms: row.try_get("delivered_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        door: row.try_get("door")?,
        response: json("response")?,
        reason: row.try_get("reason")?,
        job: row.try_get("job")?,
        created_by: row.try_get("created_by")?,
    })
}

fn text(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(Value::to_string)
}

/// Inserts `c`; `false` when a command with the same retry `key` exists already (nothing written).
pub(crate) async fn insert(conn: &mut SqliteConnection, c: &TrackedCommand, key: Option<&str>) -> Result<bool, CommandError> {
    let done = sqlx::query(
        "INSERT INTO commands (id, device, tenant, name, payload, state, created_at_ms, expires_at_ms, job, created_by,
                               idempotency_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(&c.id)
    .bind(c.device.as_str())
    .bind(c.tenant.as_str())
    .bind(&c.name)
    .bind(c.payload.to_string())
    .bind(c.state.as_str())
    .bind(c.created_at_ms)
    .bind(c.expires_at_ms)
    .bind(&c.job)
    .bind(&c.created_by)
    .bind(key)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn load_by_key(conn: &mut SqliteConnection, key: &str) -> Result<Option<TrackedCommand>, CommandError> {
    let row =
        sqlx::query(&format!("SELECT {COLUMNS} FROM commands WHERE idempotency_key = ?")).bind(key).fetch_optional(conn).await?;
    row.as_ref().map(decode).transpose()
}

pub(crate) async fn load(conn: &mut SqliteConnection, id: &str) -> Result<Option<TrackedCommand>, CommandError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM commands WHERE id = ?")).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(decode).transpose()
}

/// Writes a step on the way (sent, delivered).
pub(crate) async fn save_progress(conn: &mut SqliteConnection, c: &TrackedCommand) -> Result<(), CommandError> {
    sqlx::query("UPDATE commands SET state = ?, sent_at_ms = ?, delivered_at_ms = ?, door = ? WHERE id = ?")
        .bind(c.state.as_str())
        .bind(c.sent_at_ms)
        .bind(c.delivered_at_ms)
        .bind(&c.door)
        .bind(&c.id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes the end (an answer, expiry).
pub(crate) async fn save_outcome(conn: &mut SqliteConnection, c: &TrackedCommand) -> Result<(), CommandError> {
    sqlx::query(
        "UPDATE commands SET state = ?, sent_at_ms = ?, delivered_at_ms = ?, finished_at_ms = ?, response = ?,
                             reason = ?
         WHERE id = ?",
    )
    .bind(c.state.as_str())
    .bind(c.sent_at_ms)
    .bind(c.delivered_at_ms)
    .bind(c.finished_at_ms)
    .bind(text(&c.response))
    .bind(&c.reason)
    .bind(&c.id)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn list(
    conn: &mut SqliteConnection,
    filter: &CommandFilter,
    scope: Option<&str>,
    limit: usize,
) -> Result<Vec<TrackedCommand>, CommandError> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!("SELECT {COLUMNS} FROM commands WHERE 1 = 1"));
    if let Some(tenant) = scope {
        q.push(" AND tenant = ").push_bind(tenant.to_string());
    }
    if let Some(device) = &filter.device {
        q.push(" AND device = ").push_bind(device.as_str().to_string());
    }
    if let Some(state) = filter.state {
        q.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(job) = &filter.job {
        q.push(" AND job = ").push_bind(job.clone());
    }
    if let Some(after) = &filter.after {
        q.push(" AND seq > COALESCE((SELECT seq FROM commands WHERE id = ").push_bind(after.clone()).push("), 0)");
    }
    q.push(" ORDER BY seq LIMIT ").push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let rows = q.build().fetch_all(conn).await?;
    rows.iter().map(decode).collect()
}

pub(crate) async fn open_for(conn: &mut SqliteConnection, device: &str) -> Result<Vec<TrackedCommand>, CommandError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM commands WHERE device = ? AND {OPEN} ORDER BY seq"))
        .bind(device)
        .fetch_all(conn)
        .await?;
    rows.iter().map(decode).collect()
}

pub(crate) async fn due(conn: &mut SqliteConnection, now_ms: i64) -> Result<Vec<TrackedCommand>, CommandError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM commands WHERE expires_at_ms <= ? AND {OPEN} ORDER BY seq"))
        .bind(now_ms)
        .fetch_all(conn)
        .await?;
    rows.iter().map(decode).collect()
}

pub(crate) async fn next_expiry(conn: &mut SqliteConnection) -> Result<Option<i64>, CommandError> {
    Ok(sqlx::query_scalar(&format!("SELECT MIN(expires_at_ms) FROM commands WHERE {OPEN}")).fetch_one(conn).await?)
}

pub(crate) async fn job_counts(
    conn: &mut SqliteConnection,
    job: &str,
    scope: Option<&str>,
) -> Result<BTreeMap<CommandState, u64>, CommandError> {
    let rows =
        sqlx::query("SELECT state, COUNT(*) AS n FROM commands WHERE job = ?1 AND (?2 IS NULL OR tenant = ?2) GROUP BY state")
            .bind(job)
            .bind(scope)
            .fetch_all(conn)
            .await?;
    let mut counts = BTreeMap::new();
    for row in rows {
        let state: CommandState = row.try_get::<String, _>("state")?.parse().map_err(|e: String| storage("state", e))?;
        counts.insert(state, u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0));
    }
    Ok(counts)
}
