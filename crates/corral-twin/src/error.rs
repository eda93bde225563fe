//! The twin's error type and its single mapping to what a client may see.

use corral_model::{ErrorKind, WireError};

/// Everything a twin call can fail with. The messages of the client-facing variants are safe to
/// show as they are; storage failures carry details meant for the log only.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    /// No twin for this device, or one the caller's tenant scope does not cover (the two look
    /// the same from outside, so a scoped caller cannot probe other tenants' device ids).
    #[error("{0}")]
    NotFound(String),
    /// The desired document moved on since the version the caller read (HTTP 412 on `If-Match`).
    #[error("the desired document is at version {current}, not {expected}; read it again and retry")]
    Conflict { expected: u64, current: u64 },
    /// Malformed JSON, a patch that is not an object, nesting over the limit.
    #[error("{0}")]
    BadInput(String),
    /// A patch or the document it would produce is over the size limit (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    #[error("twin database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Anything else below the API: creating the data directory, a schema newer than this build,
    /// a stored document that no longer decodes.
    #[error("twin storage error: {0}")]
    Storage(String),
}

impl TwinError {
    /// The client-facing form. Database and storage details are logged here and replaced by a
    /// generic message, so SQL text and file paths never reach a client.
    pub fn to_wire(&self) -> WireError {
        let kind = match self {
            TwinError::NotFound(_) => ErrorKind::NotFound,
            TwinError::Conflict { .. } => ErrorKind::Conflict,
            TwinError::BadInput(_) => ErrorKind::BadInput,
            TwinError::TooLarge(_) => ErrorKind::TooLarge,
            TwinError::Db(sqlx::Error::PoolTimedOut) => {
                tracing::warn!("twin database pool timed out");
                return WireError::unavailable("the twin store is busy, retry shortly");
            }
            TwinError::Db(_) | TwinError::Storage(_) => {
                tracing::error!(error = %self, "twin storage failure");
                return WireError::internal("internal twin error");
            }
        };
        WireError::new(kind, self.to_string())
    }

    pub(crate) fn not_found(device: &str) -> Self {
        TwinError::NotFound(format!("device {device:?} has no twin"))
    }

    pub(crate) fn storage(message: impl Into<String>) -> Self {
        TwinError::Storage(message.into())
    }
}

impl From<corral_sqlite::SqliteError> for TwinError {
    fn from(e: corral_sqlite::SqliteError) -> Self {
        match e {
            corral_sqlite::SqliteError::Db(e) => TwinError::Db(e),
            other => TwinError::storage(other.to_string()),
        }
    }
}

impl From<TwinError> for WireError {
    fn from(e: TwinError) -> Self {
        e.to_wire()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_details_do_not_reach_the_client_and_limits_are_413() {
        let w = TwinError::Db(sqlx::Error::Protocol("SELECT secret FROM twins".into())).to_wire();
        assert_eq!(w.kind, ErrorKind::Internal);
        assert!(!w.message.contains("SELECT"));
        assert_eq!(TwinError::TooLarge("big".into()).to_wire().kind, ErrorKind::TooLarge);
        let w = TwinError::Conflict { expected: 3, current: 5 }.to_wire();
        assert_eq!(w.kind, ErrorKind::Conflict);
        assert!(w.message.contains("version 5, not 3"));
    }
}
