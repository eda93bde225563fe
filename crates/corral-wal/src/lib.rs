//! Segmented append-only write-ahead log with CRC-checked records, group commit and replay.
//!
//! # Place on the data path
//!
//! ```text
//! transport (HTTP/MQTT) → pipeline (decode, validate) → WAL → write buffer → segments on disk
//! ```
//!
//! The pipeline hands each accepted batch to [`Wal::append`] as opaque bytes and only answers the
//! client once that resolves: *acknowledged means durable*. An append resolves after the
//! `sync_data` that covers its bytes, so a kill -9 or power loss cannot lose it. On restart
//! [`Wal::open`] replays every intact record so the store can rebuild its write buffer; once the
//! store has persisted a range elsewhere it calls [`Wal::rotate`] and
//! [`Wal::remove_segments_before`] to drop the covered segments.
//!
//! # Main types
//!
//! - [`WalConfig`]: directory, segment size, group size, first sequence number.
//! - [`Wal`]: cheap-to-clone handle; a dedicated writer thread does group commit (one fsync
//!   covers every append queued while the previous one ran).
//! - [`Record`] / [`ReplayReport`] / [`Damage`]: what replay hands back. A torn or corrupt tail
//!   (the unacknowledged end of a crash) is cut off and reported, never an error.
//! - [`WalMetricsSnapshot`]: counters and an fsync latency histogram for `/metrics`.
//! - [`WalError`]: failures; [`WalError::is_storage_full`] singles out "disk full".
//!
//! # Example
//!
//! ```
//! use corral_wal::{Wal, WalConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let rt = tokio::runtime::Builder::new_current_thread().build()?;
//!
//! let (wal, report) = Wal::open(WalConfig::new(dir.path()), |_| {})?;
//! assert_eq!(report.records, 0);
//! let seq = rt.block_on(wal.append(b"temp=21.5".to_vec()))?; // durable once this returns
//! wal.shutdown();
//!
//! let mut replayed = Vec::new();
//! let (wal, report) = Wal::open(WalConfig::new(dir.path()), |record| {
//!     replayed.push((record.seq, record.payload.to_vec()));
//! })?;
//! assert_eq!(replayed, [(seq, b"temp=21.5".to_vec())]);
//! assert!(report.damage.is_empty());
//! assert!(rt.block_on(wal.append(b"next".to_vec()))? > seq);
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod metrics;
mod replay;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub use config::{DEFAULT_MAX_GROUP_BYTES, DEFAULT_SEGMENT_BYTES, WalConfig};
pub use error::WalError;
pub use metrics::WalMetricsSnapshot;
pub use replay::{Damage, Record, ReplayReport};
pub use segment::MAX_RECORD_BYTES;

use writer::{Request, Shared, Writer};

/// Handle to an open log. Clones share one writer thread; dropping the last clone stops it after
/// it has served everything queued, blocking until then (like [`Wal::shutdown`]).
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Request>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl Wal {
    /// Opens (creating the dir if needed), replays every existing record in order through
    /// `on_record`, then starts the writer thread on a NEW segment. Logs damage with tracing::warn!.
    ///
    /// Records below `config.start_seq` are replayed too; skipping what is already persisted is
    /// the caller's decision. Fails with [`WalError::Locked`] if another `Wal` has the directory.
    pub fn open(config: WalConfig, mut on_record: impl FnMut(Record<'_>)) -> Result<(Wal, ReplayReport), WalError> {
        let dir = config.dir.clone();
        create_dir(&dir)?;
        // Locked before replay: replay truncates files another writer might be appending to.
        let lock = lock_dir(&dir)?;
        let replayed = replay::replay_dir(&dir, &mut on_record)?;

        let next_seq = match replayed.last_seq {
            None => config.start_seq,
            Some(last) => last.checked_add(1).ok_or(WalError::SequenceExhausted)?.max(config.start_seq),
        };
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            metrics: metrics::Metrics::default(),
            active_segment: AtomicU64::new(next_seq),
            #[cfg(test)]
            faults: Mutex::default(),
        });
        // Created here rather than by the thread so a full disk or bad permissions fail `open`.
        let active = segment::create(&dir, next_seq, &shared.metrics).map_err(|e| {
            let path = segment::path(&dir, next_seq);
            WalError::io(format!("creating WAL segment {}", path.display()), e)
        })?;
        shared.metrics.set_segments(replayed.live_segments + 1);

        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(Arc::clone(&shared), &config, next_seq, active, lock);
        let thread = std::thread::Builder::new()
            .name("corral-wal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| WalError::io("starting WAL writer thread", e))?;

        let report = replayed.report;
        tracing::info!(dir = %dir.display(), segments = report.segments, records = report.records,
            damaged = report.damage.len(), next_seq, "WAL opened");
        let inner = Inner { tx, closed: AtomicBool::new(false), thread: Mutex::new(Some(thread)), shared };
        Ok((Wal { inner: Arc::new(inner) }, report))
    }

    /// Appends one record; resolves with its sequence number only after the fsync covering it.
    ///
    /// The record is queued when the future is first polled; dropping the future afterwards
    /// does not withdraw it. An error means "not acknowledged" (see [`WalError`]).
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64, WalError> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::RecordTooLarge { len: payload.len(), max: MAX_RECORD_BYTES });
        }
        let (reply, answer) = oneshot::channel();
        self.inner.send(Request::Append { payload, reply })?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// Seals the current segment and starts a new one; every record appended before this call
    /// resolves is in a segment whose id is < the returned id. Ordered with appends (goes through the same queue).
    ///
    /// If the current segment holds no record yet it is kept and its id returned.
    pub async fn rotate(&self) -> Result<u64, WalError> {
        let (reply, answer) = oneshot::channel();
        self.inner.send(Request::Rotate { reply })?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// Deletes sealed segments whose id is < `segment_id` (after their data was persisted elsewhere).
    ///
    /// The active segment is never deleted, whatever `segment_id` says. Returns how many files
    /// were removed; fails with [`WalError::Closed`] after shutdown (the directory may already
    /// belong to a new `Wal`).
    pub fn remove_segments_before(&self, segment_id: u64) -> Result<usize, WalError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(WalError::Closed);
        }
        let shared = &self.inner.shared;
        let limit = segment_id.min(shared.active_segment.load(Ordering::Acquire));
        let segments =
            segment::list(&shared.dir).map_err(|e| WalError::io(format!("listing WAL directory {}", shared.dir.display()), e))?;
        let mut removed = 0;
        for (_, path) in segments.iter().take_while(|(id, _)| *id < limit) {
            match fs::remove_file(path) {
                Ok(()) => removed += 1,
                // A concurrent call got there first; the outcome is the same.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    shared.metrics.segments_removed(removed as u64);
                    return Err(WalError::io(format!("removing WAL segment {}", path.display()), e));
                }
            }
        }
        if removed > 0 {
            shared.metrics.segments_removed(removed as u64);
            segment::sync_dir(&shared.dir)
                .map_err(|e| WalError::io(format!("syncing WAL directory {}", shared.dir.display()), e))?;
            tracing::debug!(removed, before = limit, "WAL segments removed");
        }
        Ok(removed)
    }

    /// Counters for /metrics.
    pub fn metrics(&self) -> WalMetricsSnapshot {
        self.inner.shared.metrics.snapshot()
    }

    /// Stops the writer thread after it drained the queue (pending appends still complete).
    ///
    /// Blocks until the thread has exited and released the directory lock, so the directory can
    /// be reopened right after. Later appends and rotations fail with [`WalError::Closed`].
    pub fn shutdown(&self) {
        self.inner.stop();
    }
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.shared.dir)
            .field("active_segment", &self.inner.shared.active_segment.load(Ordering::Relaxed))
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Inner {
    fn send(&self, request: Request) -> Result<(), WalError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(WalError::Closed);
        }
        self.tx.send(request).map_err(|_| WalError::Closed)
    }

    fn stop(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Request::Shutdown);
        }
        // Joined under the lock so a concurrent second `stop` also waits for the exit.
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = thread.take()
            && handle.join().is_err()
        {
            tracing::error!(dir = %self.shared.dir.display(), "WAL writer thread panicked");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
impl Wal {
    /// Makes the next group commit fail (or stall) as described by `fault`.
    pub(crate) fn inject_fault(&self, fault: writer::Fault) {
        let mut faults = self.inner.shared.faults.lock().unwrap_or_else(PoisonError::into_inner);
        faults.push_back(fault);
    }

    pub(crate) fn active_segment(&self) -> u64 {
        self.inner.shared.active_segment.load(Ordering::Acquire)
    }
}

fn create_dir(dir: &Path) -> Result<(), WalError> {
    if dir.is_dir() {
        return Ok(());
    }
    let context = || format!("creating WAL directory {}", dir.display());
    fs::create_dir_all(dir).map_err(|e| WalError::io(context(), e))?;
    // The new directory entry itself must survive a crash, or so would nothing inside it.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        segment::sync_dir(parent).map_err(|e| WalError::io(context(), e))?;
    }
    Ok(())
}

/// Takes an exclusive advisory lock on `dir/LOCK`. Two writers on one directory would interleave
/// segments and truncate each other's tails during replay.
fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| WalError::io(format!("opening WAL lock file {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(WalError::Locked { dir: dir.to_path_buf() }),
        Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            tracing::warn!(dir = %dir.display(), "file locking unsupported; not guarding the WAL");
            Ok(file)
        }
        Err(TryLockError::Error(e)) => Err(WalError::io(format!("locking WAL directory {}", dir.display()), e)),
    }
}
