//! Schema migrations, embedded in the binary so a single executable carries its schema.
//!
//! Each migration runs once, in order, and all pending ones run in one `BEGIN IMMEDIATE`
//! transaction together with their `_migrations` rows: SQLite DDL is transactional, so a crash
//! or a failing statement leaves the previous schema intact, and the immediate lock keeps two
//! processes opening the same file from both applying the same step.

use crate::RegistryError;
use crate::time::now_ms;
use sqlx::{Row, SqlitePool};

struct Migration {
    version: i64,
    sql: &'static str,
}

/// Append only: a released migration is never edited, a change is a new file.
const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, sql: include_str!("../../migrations/0001_init.sql") },
    Migration { version: 2, sql: include_str!("../../migrations/0002_certificates.sql") },
    Migration { version: 3, sql: include_str!("../../migrations/0003_psk.sql") },
    Migration { version: 4, sql: include_str!("../../migrations/0004_users.sql") },
    Migration { version: 5, sql: include_str!("../../migrations/0005_device_indexes.sql") },
];

/// Brings the schema up to date; returns how many migrations were applied (0 when current).
pub(crate) async fn run(pool: &SqlitePool) -> Result<usize, RegistryError> {
    // Foreign keys are off while migrating so a migration may rebuild a table others refer to
    // (SQLite's documented way to change a constraint); they are checked before the commit.
    // The pragma is per connection and has no effect inside a transaction, hence before BEGIN.
    let mut conn = pool.acquire().await?;
    sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await?;
    let applied = migrate(&mut conn).await;
    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
    applied
}

async fn migrate(conn: &mut sqlx::SqliteConnection) -> Result<usize, RegistryError> {
    use sqlx::Connection;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS _migrations (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         ) STRICT",
    )
    .execute(&mut *tx)
    .await?;
    let current: i64 =
        sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM _migrations").fetch_one(&mut *tx).await?.try_get("v")?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > latest {
        // Running an older binary against a newer database would write rows the newer schema
        // does not expect; refuse rather than corrupt.
        return Err(RegistryError::storage(format!(
            "the registry database is at schema version {current}, newer than this build knows ({latest}); \
             upgrade corral"
        )));
    }
    let mut applied = 0;
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO _migrations (version, applied_at) VALUES (?, ?)")
            .bind(m.version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = m.version, "registry migration applied");
        applied += 1;
    }
    if applied > 0 {
        let broken = sqlx::query("PRAGMA foreign_key_check").fetch_all(&mut *tx).await?;
        if !broken.is_empty() {
            return Err(RegistryError::storage(format!(
                "migration left {} rows with broken references; not applied",
                broken.len()
            )));
        }
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.first().is_some_and(|m| m.version == 1));
    }
}
