//! What goes into the outbox ([`NewEntry`]), what comes out to a list or a retry ([`Record`]),
//! and which entries a caller may see ([`Scope`]).

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

/// Where an entry is in its life. `Pending` also covers the wait between retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Delivered,
    /// Given up on: a permanent failure or the attempt limit. Stays until someone retries it.
    Dead,
}

impl State {
    /// The word stored in the `state` column and shown by the APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        match s {
            "pending" => Some(State::Pending),
            "delivered" => Some(State::Delivered),
            "dead" => Some(State::Dead),
            _ => None,
        }
    }
}

/// An entry about to be committed in the host's transaction.
#[derive(Debug, Clone)]
pub struct NewEntry<T> {
    /// Unique per delivery: a second entry with the same key is dropped, and receivers use it
    /// to drop the duplicates that at-least-once delivery can cause.
    pub idempotency_key: String,
    /// What caused the entry, opaque to the outbox (`"alarm"`, 42): hosts show and scope by it.
    pub owner_kind: &'static str,
    pub owner_id: i64,
    /// The tenant whose entry it is; `None` for platform-wide entries, which only unscoped
    /// callers see.
    pub tenant: Option<String>,
    /// What happened to the owner (`raised`, `cleared`...), shown with the entry.
    pub event: String,
    /// Where and how to deliver, stored as JSON and handed back to [`crate::Deliver`].
    pub target: T,
    /// The bytes the receiver gets (a webhook body, a message payload).
    pub payload: String,
}

/// A stored entry as lists and retries return it. The payload stays in the table; the target is
/// the host's JSON, for the host to read ([`Record::target`]) and redact before showing.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: i64,
    pub idempotency_key: String,
    pub owner_kind: String,
    pub owner_id: i64,
    pub tenant: Option<String>,
    pub event: String,
    pub target_json: String,
    pub state: State,
    /// Attempts made so far (reset to 0 by a retry).
    pub attempts: i64,
    /// When the next attempt is due, Unix ms (for a pending entry).
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

impl Record {
    /// The target as the host stored it.
    pub fn target<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.target_json)
    }

    pub(crate) fn from_row(row: &SqliteRow) -> Result<Record, sqlx::Error> {
        let state: String = row.try_get("state")?;
        let state = State::parse(&state).ok_or_else(|| sqlx::Error::Decode(format!("unknown outbox state `{state}`").into()))?;
        Ok(Record {
            id: row.try_get("id")?,
            idempotency_key: row.try_get("idempotency_key")?,
            owner_kind: row.try_get("owner_kind")?,
            owner_id: row.try_get("owner_id")?,
            tenant: row.try_get("tenant")?,
            event: row.try_get("event")?,
            target_json: row.try_get("target")?,
            state,
            attempts: row.try_get("attempts")?,
            next_attempt_at_ms: row.try_get("next_attempt_at")?,
            last_error: row.try_get("last_error")?,
            created_at_ms: row.try_get("created_at")?,
            delivered_at_ms: row.try_get("delivered_at")?,
        })
    }
}

/// Which entries a caller may see and touch; `None` fields do not narrow. An entry outside the
/// scope answers "not found", so ids of other tenants do not leak.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub owner_kind: Option<&'a str>,
    pub tenant: Option<&'a str>,
}

/// Which entries to list, newest first. `before` is the id to continue after (pagination).
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter<'a> {
    pub scope: Scope<'a>,
    pub state: Option<State>,
    /// At most this many, clamped to 1..=1000.
    pub limit: usize,
    pub before: Option<i64>,
}
