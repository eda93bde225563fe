//! How Corral's rooms keep their own state in SQLite (the registry, the twins, later the tracked
//! commands): one way to open a durable database file, to migrate it, and to write to it, so each
//! room holds only its SQL.
//!
//! Place on the path: beside it. Telemetry goes to the WAL and Parquet, never here; these are
//! the small, transactional records around it.
//!
//! - [`open`]: a file in WAL mode (readers never wait for the writer) with `synchronous = FULL`
//!   (a committed write survives power loss, not only a crash of the process), foreign keys on,
//!   and a busy timeout so writers queue; [`open_with`] for writes that need only survive a
//!   crash of the process ([`Durability`]); [`open_in_memory`] for tests and examples.
//! - [`migrate`]: the room's embedded [`Migration`]s, all pending ones in one `BEGIN IMMEDIATE`
//!   transaction with their `_migrations` rows (SQLite DDL is transactional: a crash leaves the
//!   previous schema), foreign keys checked before the commit, and a database newer than the
//!   build refused.
//! - [`write_tx`]: a transaction that takes the write lock up front.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use corral_sqlite::Migration;
//! const MIGRATIONS: &[Migration] = &[Migration { version: 1, sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)" }];
//! let pool = corral_sqlite::open_in_memory().await?;
//! assert_eq!(corral_sqlite::migrate(&pool, "notes", MIGRATIONS, 0).await?, 1);
//! let mut tx = corral_sqlite::write_tx(&pool).await?;
//! sqlx::query("INSERT INTO notes (text) VALUES ('hello')").execute(&mut *tx).await?;
//! tx.commit().await?;
//! # Ok::<(), corral_sqlite::SqliteError>(())
//! # }).unwrap();
//! ```

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, Sqlite, Transaction};
use std::path::Path;
use std::time::Duration;

/// How long a writer waits for another writer's lock before failing: these writes are short, so
/// seconds of waiting means something is badly wrong, not merely busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What opening, migrating or writing can fail with; each room maps it into its own error.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Creating the data directory.
    #[error("creating {path}: {message}")]
    Io { path: String, message: String },
    /// The file was written by a newer build: an older one would write rows the newer schema
    /// does not expect, so it refuses rather than corrupt.
    #[error("the {what} database is at schema version {current}, newer than this build knows ({latest}); upgrade corral")]
    TooNew { what: &'static str, current: i64, latest: i64 },
    /// A migration left rows that refer to nothing; it was not applied.
    #[error("a {what} migration left {rows} rows with broken references; not applied")]
    BrokenReferences { what: &'static str, rows: usize },
}

/// One step of a room's schema. A released migration is never edited: a change is a new one.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub sql: &'static str,
}

/// What a committed write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Power loss and an OS crash: every commit is fsynced (`synchronous = FULL`).
    PowerLoss,
    /// A crash or `kill -9` of the process, not of the machine: a commit is handed to the OS,
    /// which writes it out with the next fsynced commit on the same file or the next checkpoint
    /// (WAL with `synchronous = NORMAL`; the order of commits is kept either way). For steps that
    /// can be taken again after a power cut, at a fraction of an fsync's time.
    ProcessCrash,
}

/// Opens (creating the file and its parent directory if missing) the durable database at `path`
/// with at most `max_connections` (readers run concurrently in WAL mode; SQLite serializes
/// writers anyway, so a few suffice).
pub async fn open(path: &Path, max_connections: u32) -> Result<SqlitePool, SqliteError> {
    open_with(path, max_connections, Durability::PowerLoss).await
}

/// [`open`], with commits that survive what `durability` says. Connections to one file may
/// differ: a room can keep its must-survive-power-loss writes on one pool and its cheap steps on
/// another.
pub async fn open_with(path: &Path, max_connections: u32, durability: Durability) -> Result<SqlitePool, SqliteError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| SqliteError::Io { path: parent.display().to_string(), message: e.to_string() })?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::PowerLoss => SqliteSynchronous::Full,
            Durability::ProcessCrash => SqliteSynchronous::Normal,
        })
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    Ok(SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // A local file cannot drop the connection the way a network database can, and the ping
        // sqlx sends by default is a round trip to the connection's thread on every acquire.
        .test_before_acquire(false)
        .connect_with(options)
        .await?)
}

/// A private in-memory database, gone when the pool drops: one connection that never retires
/// (an in-memory database lives exactly as long as the connections holding it).
pub async fn open_in_memory() -> Result<SqlitePool, SqliteError> {
    let options = SqliteConnectOptions::new().in_memory(true).foreign_keys(true).busy_timeout(BUSY_TIMEOUT);
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await?)
}

/// A write transaction that takes SQLite's write lock up front. A deferred transaction that
/// reads, then writes, fails with SQLITE_BUSY (without waiting) if another connection wrote in
/// between; taking the lock first makes writers queue on the busy timeout instead.
pub async fn write_tx(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, SqliteError> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// Brings the schema of the `what` database (for log lines and errors) up to date with
/// `migrations` (versions increasing from 1); returns how many were applied (0 when current).
pub async fn migrate(pool: &SqlitePool, what: &'static str, migrations: &[Migration], now_ms: i64) -> Result<usize, SqliteError> {
    // Foreign keys are off while migrating so a migration may rebuild a table others refer to
    // (SQLite's documented way to change a constraint); they are checked before the commit.
    // The pragma is per connection and has no effect inside a transaction, hence before BEGIN.
    let mut conn = pool.acquire().await?;
    sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await?;
    let applied = apply(&mut conn, what, migrations, now_ms).await;
    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
    applied
}

async fn apply(
    conn: &mut sqlx::SqliteConnection,
    what: &'static str,
    migrations: &[Migration],
    now_ms: i64,
) -> Result<usize, SqliteError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT")
        .execute(&mut *tx)
        .await?;
    let current: i64 =
        sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM _migrations").fetch_one(&mut *tx).await?.try_get("v")?;
    let latest = migrations.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(SqliteError::TooNew { what, current, latest });
    }
    let mut applied = 0;
    for m in migrations.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO _migrations (version, applied_at) VALUES (?, ?)")
            .bind(m.version)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tracing::info!(database = what, version = m.version, "migration applied");
        applied += 1;
    }
    if applied > 0 {
        let broken = sqlx::query("PRAGMA foreign_key_check").fetch_all(&mut *tx).await?;
        if !broken.is_empty() {
            return Err(SqliteError::BrokenReferences { what, rows: broken.len() });
        }
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Migration = Migration { version: 1, sql: "CREATE TABLE a (id INTEGER PRIMARY KEY)" };
    const V2: Migration =
        Migration { version: 2, sql: "CREATE TABLE b (id INTEGER PRIMARY KEY, a INTEGER NOT NULL REFERENCES a(id))" };

    #[tokio::test]
    async fn migrations_apply_once_in_order_and_a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/x.db");
        let pool = open(&path, 2).await.unwrap();
        assert_eq!(migrate(&pool, "x", &[V1], 7).await.unwrap(), 1);
        assert_eq!(migrate(&pool, "x", &[V1], 8).await.unwrap(), 0, "already current");
        assert_eq!(migrate(&pool, "x", &[V1, V2], 9).await.unwrap(), 1, "only the new one");
        let err = migrate(&pool, "x", &[V1], 10).await.unwrap_err();
        assert!(matches!(err, SqliteError::TooNew { current: 2, latest: 1, .. }), "{err}");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&pool).await.unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn pools_on_one_file_keep_their_own_durability_and_see_each_others_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let full = open(&path, 1).await.unwrap();
        migrate(&full, "x", &[V1], 0).await.unwrap();
        let cheap = open_with(&path, 1, Durability::ProcessCrash).await.unwrap();
        // 2 = FULL, 1 = NORMAL (SQLite's numbering).
        let level =
            |pool: SqlitePool| async move { sqlx::query_scalar::<_, i64>("PRAGMA synchronous").fetch_one(&pool).await.unwrap() };
        assert_eq!((level(full.clone()).await, level(cheap.clone()).await), (2, 1));
        sqlx::query("INSERT INTO a (id) VALUES (1)").execute(&cheap).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM a").fetch_one(&full).await.unwrap();
        assert_eq!(seen, 1);
    }

    #[tokio::test]
    async fn a_failing_migration_leaves_the_previous_schema() {
        let pool = open_in_memory().await.unwrap();
        migrate(&pool, "x", &[V1], 0).await.unwrap();
        let bad = Migration { version: 2, sql: "CREATE TABLE c (id INTEGER); THIS IS NOT SQL" };
        assert!(migrate(&pool, "x", &[V1, bad], 0).await.is_err());
        let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(tables, ["_migrations", "a"], "c was rolled back with the failed step");
    }

    #[tokio::test]
    async fn a_migration_that_breaks_references_is_not_applied() {
        let pool = open_in_memory().await.unwrap();
        migrate(&pool, "x", &[V1, V2], 0).await.unwrap();
        let orphan = Migration { version: 3, sql: "INSERT INTO b (id, a) VALUES (1, 42)" };
        let err = migrate(&pool, "x", &[V1, V2, orphan], 0).await.unwrap_err();
        assert!(matches!(err, SqliteError::BrokenReferences { rows: 1, .. }), "{err}");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM b").fetch_one(&pool).await.unwrap();
        assert_eq!(rows, 0);
    }
}
