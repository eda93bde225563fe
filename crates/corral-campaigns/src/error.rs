//! The campaigns' error type and its one mapping to what a client may see.

use corral_model::{ErrorKind, WireError};

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// No such campaign or artifact, or one the caller's tenant scope does not cover.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    /// The action does not fit the campaign's state (resuming a cancelled campaign).
    #[error("{0}")]
    Conflict(String),
    /// An upload over the size limit.
    #[error("{0}")]
    TooLarge(String),
    /// A signature that does not verify, a download grant that is forged or expired.
    #[error("{0}")]
    Forbidden(String),
    #[error("campaign database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("artifact storage error: {0}")]
    Io(#[from] std::io::Error),
    #[error("campaign storage error: {0}")]
    Storage(String),
    /// Another room (registry, twins, commands) refused or failed.
    #[error("{0}")]
    Wire(WireError),
}

impl CampaignError {
    /// The client-facing form; storage details are logged and replaced by a generic message.
    pub fn to_wire(&self) -> WireError {
        let kind = match self {
            CampaignError::NotFound(_) => ErrorKind::NotFound,
            CampaignError::BadInput(_) => ErrorKind::BadInput,
            CampaignError::Conflict(_) => ErrorKind::Conflict,
            CampaignError::TooLarge(_) => ErrorKind::TooLarge,
            CampaignError::Forbidden(_) => ErrorKind::Forbidden,
            CampaignError::Wire(e) => return e.clone(),
            CampaignError::Db(sqlx::Error::PoolTimedOut) => {
                tracing::warn!("campaign database pool timed out");
                return WireError::unavailable("the campaign database is busy, retry shortly");
            }
            CampaignError::Db(_) | CampaignError::Io(_) | CampaignError::Storage(_) => {
                tracing::error!(error = %self, "campaign storage failure");
                return WireError::internal("internal campaign error");
            }
        };
        WireError::new(kind, self.to_string())
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        CampaignError::BadInput(message.into())
    }
}

impl From<corral_sqlite::SqliteError> for CampaignError {
    fn from(e: corral_sqlite::SqliteError) -> Self {
        match e {
            corral_sqlite::SqliteError::Db(e) => CampaignError::Db(e),
            other => CampaignError::Storage(other.to_string()),
        }
    }
}

impl From<WireError> for CampaignError {
    fn from(e: WireError) -> Self {
        CampaignError::Wire(e)
    }
}

impl From<CampaignError> for WireError {
    fn from(e: CampaignError) -> Self {
        e.to_wire()
    }
}
