//! The `outbox` table, created by the host in its own database (by its own migrations), so that
//! an entry commits in the same transaction as the change that caused it.
//!
//! The outbox never reads the host's tables: the owner (`owner_kind`, `owner_id`) and the
//! `tenant` are copied onto each entry when it is enqueued, and `target` is the host's JSON.

use sqlx::SqliteConnection;

/// The table and its index. A change to it needs a migration step in every host database that
/// holds an outbox (today: the rules' `rules.db`).
pub const SCHEMA: &str = "
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    idempotency_key  TEXT NOT NULL UNIQUE,
    owner_kind       TEXT NOT NULL,
    owner_id         INTEGER NOT NULL,
    tenant           TEXT,
    event            TEXT NOT NULL,
    target           TEXT NOT NULL,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER
) STRICT;
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
";

/// Creates the `outbox` table on `conn`; call it inside the host's migration transaction.
pub async fn create(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(SCHEMA).execute(conn).await?;
    Ok(())
}
