//! The SQL for command rows. Every function takes the caller's connection (a transaction for
//! writes), so one logical change is one commit.

use crate::CommandError;
use crate::ledger::CommandFilter;
use crate::model::{Answer, CommandState, TrackedCommand};
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

/// Moves `id` of `device` to `to` (sent or delivered) if it is at an earlier step, in one
/// statement (one commit, one trip to the connection's thread); the command after, or `None`
/// when there is no such command or it had moved on.
pub(crate) async fn advance(
    conn: &mut SqliteConnection,
    device: &str,
    id: &str,
    to: CommandState,
    door: &str,
    now_ms: i64,
) -> Result<Option<TrackedCommand>, CommandError> {
    let earlier: Vec<String> = CommandState::ALL.iter().filter(|s| **s < to).map(|s| format!("'{}'", s.as_str())).collect();
    // Delivered without a separate send (an HTTP poll) was sent at the same moment.
    let row = sqlx::query(&format!(
        "UPDATE commands SET state = ?1, door = ?2, sent_at_ms = COALESCE(sent_at_ms, ?3),
                             delivered_at_ms = CASE WHEN ?1 = 'delivered' THEN ?3 ELSE delivered_at_ms END
         WHERE id = ?4 AND device = ?5 AND state IN ({})
         RETURNING {COLUMNS}",
        earlier.join(", ")
    ))
    .bind(to.as_str())
    .bind(door)
    .bind(now_ms)
    .bind(id)
    .bind(device)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(decode).transpose()
}

/// Records the device's answer to an open command of its own, in one statement; `None` when
/// there is no such open command. Answered means received: an ack that has not arrived yet (it
/// travels apart from the answer) or a door that cannot tell leaves its steps at the answer's time.
pub(crate) async fn answer(
    conn: &mut SqliteConnection,
    device: &str,
    id: &str,
    answer: &Answer,
    now_ms: i64,
) -> Result<Option<TrackedCommand>, CommandError> {
    let row = sqlx::query(&format!(
        "UPDATE commands SET state = ?1, sent_at_ms = COALESCE(sent_at_ms, ?2),
                             delivered_at_ms = COALESCE(delivered_at_ms, ?2), finished_at_ms = ?2, response = ?3,
                             reason = ?4
         WHERE id = ?5 AND device = ?6 AND {OPEN}
         RETURNING {COLUMNS}"
    ))
    .bind(answer.state.as_str())
    .bind(now_ms)
    .bind(text(&answer.payload))
    .bind(&answer.reason)
    .bind(id)
    .bind(device)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(decode).transpose()
}

/// Writes the end of an expired command.
pub(crate) async fn save_outcome(conn: &mut SqliteConnection, c: &TrackedCommand) -> Result<(), CommandError> {
    sqlx::query("UPDATE commands SET state = ?, finished_at_ms = ?, reason = ? WHERE id = ?")
        .bind(c.state.as_str())
        .bind(c.finished_at_ms)
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

/// Deletes up to `limit` commands that finished before `before_ms`, oldest first.
pub(crate) async fn purge_finished(conn: &mut SqliteConnection, before_ms: i64, limit: usize) -> Result<u64, CommandError> {
    let done = sqlx::query(
        "DELETE FROM commands WHERE seq IN
           (SELECT seq FROM commands WHERE finished_at_ms < ?1 ORDER BY finished_at_ms LIMIT ?2)",
    )
    .bind(before_ms)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
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
