//! Store errors. Those that reach a client convert once into a [`WireError`].

use corral_model::WireError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request does not fit the table's schema (names the field); nothing was stored.
    #[error("{0}")]
    Schema(WireError),
    #[error("disk full: the write was not stored; free space under the data directory")]
    DiskFull,
    #[error("write buffer is at its ceiling ({ceiling_bytes} bytes) and persistence has not caught up; retry shortly")]
    Overloaded { ceiling_bytes: usize },
    #[error("WAL: {0}")]
    Wal(#[from] corral_wal::WalError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("the store is shutting down")]
    ShuttingDown,
    /// The store was set up wrongly (a programming or configuration error, found at start).
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }

    pub fn to_wire(&self) -> WireError {
        match self {
            StoreError::Schema(e) => e.clone(),
            StoreError::DiskFull | StoreError::Overloaded { .. } | StoreError::ShuttingDown => {
                WireError::unavailable(self.to_string())
            }
            StoreError::Query(e) => WireError::bad_input(e.to_string()),
            StoreError::Invalid(e) => WireError::internal(e.clone()),
            StoreError::Wal(_) | StoreError::Io { .. } => {
                tracing::error!(error = %self, "storage failure");
                WireError::unavailable("storage is failing; the write was not stored (see server log)")
            }
        }
    }
}
