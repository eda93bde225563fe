//! What can go wrong in the rules room, and how each maps once to what a client sees.

use corral_model::{ErrorKind, WireError};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A rule definition (or another request) that cannot be accepted; the message names the
    /// field and, for conditions, the position of the mistake.
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// The rules database failed; details go to the log, the client sees a generic message.
    #[error("rules database: {0}")]
    Storage(#[from] sqlx::Error),
}

/// The outbox's failures in the rules' words: the messages the outbox API has always given.
impl From<corral_outbox::OutboxError> for RulesError {
    fn from(e: corral_outbox::OutboxError) -> Self {
        use corral_outbox::OutboxError;
        match e {
            OutboxError::NotFound(id) => RulesError::NotFound(format!("outbox entry {id}")),
            OutboxError::AlreadyDelivered(id) => RulesError::Conflict(format!("outbox entry {id} was already delivered")),
            OutboxError::Target(e) => RulesError::Storage(sqlx::Error::Encode(Box::new(e))),
            OutboxError::Storage(e) => RulesError::Storage(e),
        }
    }
}

impl RulesError {
    pub fn invalid(message: impl Into<String>) -> Self {
        RulesError::Invalid(message.into())
    }

    pub fn to_wire(&self) -> WireError {
        match self {
            RulesError::Invalid(m) => WireError::new(ErrorKind::BadInput, m.clone()),
            RulesError::NotFound(m) => WireError::new(ErrorKind::NotFound, format!("{m} not found")),
            RulesError::Conflict(m) => WireError::new(ErrorKind::Conflict, m.clone()),
            RulesError::Forbidden(m) => WireError::new(ErrorKind::Forbidden, m.clone()),
            RulesError::Storage(e) => {
                tracing::error!(error = %e, "rules database failed");
                WireError::internal("the rules database failed; see the server log")
            }
        }
    }
}
