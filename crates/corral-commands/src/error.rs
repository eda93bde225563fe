//! The tracked commands' error type and its one mapping to what a client may see.

use corral_model::{ErrorKind, WireError};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such command, or one the caller's tenant scope does not cover (the two look the same).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    /// The command is already final (answered or expired): a late answer changes nothing.
    #[error("{0}")]
    Final(String),
    #[error("command database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("command storage error: {0}")]
    Storage(String),
}

impl CommandError {
    /// The client-facing form; database details are logged and replaced by a generic message.
    pub fn to_wire(&self) -> WireError {
        let kind = match self {
            CommandError::NotFound(_) => ErrorKind::NotFound,
            CommandError::BadInput(_) => ErrorKind::BadInput,
            CommandError::Final(_) => ErrorKind::Conflict,
            CommandError::Db(sqlx::Error::PoolTimedOut) => {
                tracing::warn!("command database pool timed out");
                return WireError::unavailable("the command ledger is busy, retry shortly");
            }
            CommandError::Db(_) | CommandError::Storage(_) => {
                tracing::error!(error = %self, "command storage failure");
                return WireError::internal("internal command error");
            }
        };
        WireError::new(kind, self.to_string())
    }

    pub(crate) fn not_found(id: &str) -> Self {
        CommandError::NotFound(format!("no command {id:?}"))
    }
}

impl From<corral_sqlite::SqliteError> for CommandError {
    fn from(e: corral_sqlite::SqliteError) -> Self {
        match e {
            corral_sqlite::SqliteError::Db(e) => CommandError::Db(e),
            other => CommandError::Storage(other.to_string()),
        }
    }
}

impl From<CommandError> for WireError {
    fn from(e: CommandError) -> Self {
        e.to_wire()
    }
}
