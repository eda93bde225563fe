//! The registry's error type and its single mapping to what a client may see.

use corral_model::{ErrorKind, WireError};

/// Everything a registry call can fail with. The message of the client-facing variants is safe to
/// show as is; storage failures carry details meant for the log only.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    BadInput(String),
    #[error("registry database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Anything else below the API: creating the data directory, a schema newer than this build,
    /// a row that no longer decodes.
    #[error("registry storage error: {0}")]
    Storage(String),
}

impl From<corral_sqlite::SqliteError> for RegistryError {
    fn from(e: corral_sqlite::SqliteError) -> Self {
        match e {
            corral_sqlite::SqliteError::Db(e) => RegistryError::Db(e),
            other => RegistryError::storage(other.to_string()),
        }
    }
}

impl RegistryError {
    /// The client-facing form. Database and storage details are logged here and replaced by a
    /// generic message, so SQL text, file paths and constraint names never reach a client.
    pub fn to_wire(&self) -> WireError {
        let kind = match self {
            RegistryError::NotFound(_) => ErrorKind::NotFound,
            RegistryError::Conflict(_) => ErrorKind::Conflict,
            RegistryError::Forbidden(_) => ErrorKind::Forbidden,
            RegistryError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            RegistryError::BadInput(_) => ErrorKind::BadInput,
            RegistryError::Db(sqlx::Error::PoolTimedOut) => {
                // Every connection busy for the whole acquire timeout: overload, not a bug.
                tracing::warn!("registry database pool timed out");
                return WireError::unavailable("the registry is busy, retry shortly");
            }
            RegistryError::Db(_) | RegistryError::Storage(_) => {
                tracing::error!(error = %self, "registry failure");
                return WireError::internal("internal registry error");
            }
        };
        WireError::new(kind, self.to_string())
    }

    pub(crate) fn not_found(what: &str, id: &str) -> Self {
        RegistryError::NotFound(format!("{what} {id:?} not found"))
    }

    pub(crate) fn storage(message: impl Into<String>) -> Self {
        RegistryError::Storage(message.into())
    }
}

impl From<RegistryError> for WireError {
    fn from(e: RegistryError) -> Self {
        e.to_wire()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_details_do_not_reach_the_client() {
        let e = RegistryError::Db(sqlx::Error::Protocol("SELECT secret FROM x".into()));
        let w = e.to_wire();
        assert_eq!(w.kind, ErrorKind::Internal);
        assert!(!w.message.contains("SELECT"));
        let w = RegistryError::BadInput("site: too long".into()).to_wire();
        assert_eq!((w.kind, w.message.as_str()), (ErrorKind::BadInput, "site: too long"));
    }
}
