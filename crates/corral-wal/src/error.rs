//! Errors of the log. Damage found during replay is not an error (see
//! [`ReplayReport`](crate::ReplayReport)); these are failures the caller has to act on.

use std::io;
use std::path::PathBuf;

/// Why an operation on the log failed. An `append` that returns any error was not acknowledged:
/// its record may be absent after a restart (or, rarely, present: unacknowledged is "unknown",
/// never "guaranteed absent").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An I/O operation failed; `context` names the operation and file.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The disk (or quota) is full. Kept apart from `Io` because it is the one failure callers
    /// routinely answer with "retry later" (HTTP 503) instead of an alert.
    #[error("WAL storage is full ({context}): {source}")]
    StorageFull {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The writer thread was shut down (or is gone); nothing more can be appended.
    #[error("WAL is closed")]
    Closed,
    /// The payload is larger than one record may be ([`MAX_RECORD_BYTES`](crate::MAX_RECORD_BYTES)).
    #[error("WAL record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    /// Another `Wal` (in this or another process) holds the directory's lock.
    #[error("WAL directory {} is in use by another writer", dir.display())]
    Locked { dir: PathBuf },
    /// The 64-bit sequence space ran out (only reachable with an absurd `start_seq`).
    #[error("WAL sequence numbers are exhausted")]
    SequenceExhausted,
}

impl WalError {
    /// Wraps an I/O error, routing "disk full" causes to [`WalError::StorageFull`].
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if is_full_kind(&source) { WalError::StorageFull { context, source } } else { WalError::Io { context, source } }
    }

    /// true when the cause is ENOSPC / ErrorKind::StorageFull / QuotaExceeded
    pub fn is_storage_full(&self) -> bool {
        match self {
            WalError::StorageFull { .. } => true,
            WalError::Io { source, .. } => is_full_kind(source),
            _ => false,
        }
    }

    /// A copy for the other waiters of a failed group: every one of them must see the same
    /// failure, but `io::Error` is not `Clone`. The OS code (and so the kind) is preserved.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            WalError::Io { context, source } => WalError::Io { context: context.clone(), source: copy_io(source) },
            WalError::StorageFull { context, source } => {
                WalError::StorageFull { context: context.clone(), source: copy_io(source) }
            }
            WalError::Closed => WalError::Closed,
            WalError::RecordTooLarge { len, max } => WalError::RecordTooLarge { len: *len, max: *max },
            WalError::Locked { dir } => WalError::Locked { dir: dir.clone() },
            WalError::SequenceExhausted => WalError::SequenceExhausted,
        }
    }
}

// std already maps ENOSPC to StorageFull and EDQUOT to QuotaExceeded, so the kind is enough.
fn is_full_kind(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

fn copy_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_full_is_recognised_from_kind_and_os_code() {
        let from_kind = WalError::io("write", io::Error::from(io::ErrorKind::StorageFull));
        assert!(from_kind.is_storage_full());
        assert!(matches!(from_kind, WalError::StorageFull { .. }));
        let quota = WalError::io("write", io::Error::from(io::ErrorKind::QuotaExceeded));
        assert!(quota.is_storage_full());
        #[cfg(target_os = "linux")]
        assert!(WalError::io("write", io::Error::from_raw_os_error(28)).is_storage_full());
        let other = WalError::io("write", io::Error::other("EIO"));
        assert!(!other.is_storage_full());
        assert!(!WalError::Closed.is_storage_full());
        assert!(from_kind.duplicate().is_storage_full());
    }
}
