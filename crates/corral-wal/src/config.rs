//! Knobs for opening a [`Wal`](crate::Wal).

use std::path::PathBuf;

/// Default segment size: large enough that rotation and the per-segment header fsync are rare,
/// small enough that deleting a persisted segment frees space promptly.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Default cap on one group commit: bounds the latency one fsync adds to the first waiter of a
/// very large group, while still letting thousands of small records share one fsync.
pub const DEFAULT_MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// Where the log lives and how it is cut into segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Directory holding the segment files (created if missing). One `Wal` per directory: a
    /// lock file keeps a second process (or a second `open` in this one) out.
    pub dir: PathBuf,
    /// Segment size at which the writer rolls to a new segment file (default 64 MiB).
    pub segment_bytes: u64,
    /// Most bytes one group commit writes before it fsyncs (default 8 MiB). A single record
    /// larger than this still gets written, alone in its group.
    pub max_group_bytes: usize,
    /// The lowest sequence number the next record may get (the store passes persisted_seq+1 so
    /// sequence numbers never go backwards even after all segments were deleted).
    pub start_seq: u64,
}

impl WalConfig {
    /// Defaults: 64 MiB segments, 8 MiB groups, sequence numbers starting at 1.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalConfig {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_group_bytes: DEFAULT_MAX_GROUP_BYTES,
            start_seq: 1,
        }
    }
}
