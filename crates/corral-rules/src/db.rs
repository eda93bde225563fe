//! The rules room's own SQLite file (`<data>/rules.db`): rules, alarms with their comments, and
//! the outbox (its table is `corral-outbox`'s, created and migrated here so alarms and their
//! entries share one file and one transaction). WAL journal with `synchronous=FULL`: a committed
//! outbox entry survives `kill -9` and power loss, which is what "delivered at least once" stands
//! on.
//!
//! Versions (`PRAGMA user_version`): 1 had the outbox keyed by alarm (`alarm_id`, `rule_id`,
//! `action`); 2 has the shared outbox table (`owner_kind`/`owner_id`, `tenant`, `target`), and
//! [`open`] moves a version-1 file's entries over in place.

use crate::alarm::{Alarm, AlarmStatus};
use crate::error::RulesError;
use crate::spec::Severity;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, Sqlite, Transaction};
use std::path::Path;
use std::time::Duration;

const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE rules (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    tenant      TEXT,
    spec        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL
) STRICT;
CREATE TABLE alarms (
    id              INTEGER PRIMARY KEY,
    rule_id         INTEGER NOT NULL,
    rule_name       TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    device          TEXT NOT NULL,
    severity        TEXT NOT NULL,
    status          TEXT NOT NULL,
    message         TEXT NOT NULL,
    count           INTEGER NOT NULL,
    first_at        INTEGER NOT NULL,
    last_at         INTEGER NOT NULL,
    last_values     TEXT NOT NULL,
    acknowledged_by TEXT,
    acknowledged_at INTEGER,
    cleared_by      TEXT,
    cleared_at      INTEGER
) STRICT;
CREATE INDEX alarms_by_status ON alarms (status, id);
CREATE INDEX alarms_by_device ON alarms (device, id);
CREATE TABLE alarm_comments (
    id        INTEGER PRIMARY KEY,
    alarm_id  INTEGER NOT NULL REFERENCES alarms (id),
    at        INTEGER NOT NULL,
    author    TEXT NOT NULL,
    text      TEXT NOT NULL
) STRICT;
";

/// Version 1 → 2, first half: the old table steps aside (its index goes, the new table's index
/// takes the name).
const OUTBOX_V1_TO_V2_MOVE: &str = "
DROP INDEX outbox_due;
ALTER TABLE outbox RENAME TO outbox_v1;
";

/// Version 1 → 2, second half: every entry moves to the new table with its id, state and
/// timings. The alarm is the owner; the tenant, which lists read through a join on the alarm,
/// is copied from it; the rule id goes into the target JSON beside the action and the device.
/// An action that is not JSON stays as it was (unreadable, as before: skipped, never sent).
const OUTBOX_V1_TO_V2_COPY: &str = "
INSERT INTO outbox (id, idempotency_key, owner_kind, owner_id, tenant, event, target, payload, state, attempts,
                    next_attempt_at, last_error, created_at, delivered_at)
SELECT o.id, o.idempotency_key, 'alarm', o.alarm_id, (SELECT a.tenant FROM alarms a WHERE a.id = o.alarm_id), o.event,
       CASE WHEN json_valid(o.action) THEN json_set(o.action, '$.rule_id', o.rule_id) ELSE o.action END,
       o.payload, o.state, o.attempts, o.next_attempt_at, o.last_error, o.created_at, o.delivered_at
FROM outbox_v1 o;
DROP TABLE outbox_v1;
";

pub async fn open(path: &Path) -> Result<SqlitePool, RulesError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let version: i64 = sqlx::query("PRAGMA user_version").fetch_one(&mut *tx).await?.try_get(0)?;
    if version > SCHEMA_VERSION {
        return Err(RulesError::Invalid(format!(
            "{} is at schema version {version}, newer than this build knows ({SCHEMA_VERSION}); upgrade corral",
            path.display()
        )));
    }
    if version == 0 {
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
        corral_outbox::schema::create(&mut tx).await?;
    }
    if version == 1 {
        sqlx::raw_sql(OUTBOX_V1_TO_V2_MOVE).execute(&mut *tx).await?;
        corral_outbox::schema::create(&mut tx).await?;
        sqlx::raw_sql(OUTBOX_V1_TO_V2_COPY).execute(&mut *tx).await?;
        tracing::info!(path = %path.display(), "rules database upgraded to schema version 2 (shared outbox table)");
    }
    if version < SCHEMA_VERSION {
        sqlx::raw_sql(&format!("PRAGMA user_version = {SCHEMA_VERSION}")).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(pool)
}

pub fn alarm_from_row(row: &SqliteRow) -> Result<Alarm, sqlx::Error> {
    let severity: String = row.try_get("severity")?;
    let status: String = row.try_get("status")?;
    let values: String = row.try_get("last_values")?;
    Ok(Alarm {
        id: row.try_get("id")?,
        rule_id: row.try_get("rule_id")?,
        rule: row.try_get("rule_name")?,
        tenant: row.try_get("tenant")?,
        device: row.try_get("device")?,
        severity: serde_json::from_value(serde_json::Value::String(severity)).unwrap_or(Severity::Warning),
        status: AlarmStatus::parse(&status).unwrap_or(AlarmStatus::Active),
        message: row.try_get("message")?,
        count: row.try_get("count")?,
        first_at: row.try_get("first_at")?,
        last_at: row.try_get("last_at")?,
        last_values: serde_json::from_str(&values).unwrap_or(serde_json::Value::Null),
        acknowledged_by: row.try_get("acknowledged_by")?,
        acknowledged_at: row.try_get("acknowledged_at")?,
        cleared_by: row.try_get("cleared_by")?,
        cleared_at: row.try_get("cleared_at")?,
    })
}

/// Inserts or replaces whole alarm rows (the in-memory book holds the truth for open ones).
pub async fn upsert_alarms(tx: &mut Transaction<'_, Sqlite>, alarms: &[Alarm]) -> Result<(), sqlx::Error> {
    for a in alarms {
        sqlx::query(
            "INSERT INTO alarms (id, rule_id, rule_name, tenant, device, severity, status, message, count, first_at, last_at,
                                 last_values, acknowledged_by, acknowledged_at, cleared_by, cleared_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, count = excluded.count, last_at = excluded.last_at,
                 last_values = excluded.last_values, acknowledged_by = excluded.acknowledged_by,
                 acknowledged_at = excluded.acknowledged_at, cleared_by = excluded.cleared_by, cleared_at = excluded.cleared_at",
        )
        .bind(a.id)
        .bind(a.rule_id)
        .bind(&a.rule)
        .bind(&a.tenant)
        .bind(&a.device)
        .bind(a.severity.as_str())
        .bind(a.status.as_str())
        .bind(&a.message)
        .bind(a.count)
        .bind(a.first_at)
        .bind(a.last_at)
        .bind(a.last_values.to_string())
        .bind(&a.acknowledged_by)
        .bind(a.acknowledged_at)
        .bind(&a.cleared_by)
        .bind(a.cleared_at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub async fn open_alarms(pool: &SqlitePool) -> Result<(Vec<Alarm>, i64), sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM alarms WHERE status != 'cleared'").fetch_all(pool).await?;
    let alarms = rows.iter().map(alarm_from_row).collect::<Result<Vec<_>, _>>()?;
    let max: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM alarms").fetch_one(pool).await?.try_get(0)?;
    Ok((alarms, max))
}
