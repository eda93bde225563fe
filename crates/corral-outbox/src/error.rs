//! What can go wrong with the outbox. Hosts map these once to their own error vocabulary.

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// No entry with this id in the caller's scope.
    #[error("outbox entry {0} not found")]
    NotFound(i64),
    /// A retry of an entry that needs none.
    #[error("outbox entry {0} was already delivered")]
    AlreadyDelivered(i64),
    /// A target the host handed in that does not serialize to JSON (a bug in the host).
    #[error("outbox target: {0}")]
    Target(#[source] serde_json::Error),
    /// The host's database failed.
    #[error("outbox database: {0}")]
    Storage(#[from] sqlx::Error),
}
