//! Schema migrations, embedded so the binary carries its schema. All pending ones run in one
//! `BEGIN IMMEDIATE` transaction with their `_migrations` rows: SQLite DDL is transactional, so a
//! crash leaves the previous schema intact, and the lock keeps two processes from both applying one.

use crate::TwinError;
use sqlx::{Connection, Row, SqlitePool};

struct Migration {
    version: i64,
    sql: &'static str,
}

/// Append only: a released migration is never edited, a change is a new file.
const MIGRATIONS: &[Migration] = &[Migration { version: 1, sql: include_str!("../../migrations/0001_init.sql") }];

/// Brings the schema up to date; returns how many migrations were applied (0 when current).
pub(crate) async fn run(pool: &SqlitePool, now_ms: i64) -> Result<usize, TwinError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT")
        .execute(&mut *tx)
        .await?;
    let current: i64 =
        sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM _migrations").fetch_one(&mut *tx).await?.try_get("v")?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > latest {
        // An older binary would write rows a newer schema does not expect; refuse rather than corrupt.
        return Err(TwinError::storage(format!(
            "the twin database is at schema version {current}, newer than this build knows ({latest}); upgrade corral"
        )));
    }
    let mut applied = 0;
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO _migrations (version, applied_at) VALUES (?, ?)")
            .bind(m.version)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = m.version, "twin migration applied");
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.first().is_some_and(|m| m.version == 1));
    }
}
