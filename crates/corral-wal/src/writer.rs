//! The group-commit writer: one std thread owns the active segment and turns a burst of queued
//! appends into one write and one fsync.
//!
//! Why a dedicated thread and not tokio tasks: `write` + `sync_data` block for milliseconds, and
//! funnelling every append through one owner makes ordering trivial (queue order = seq order =
//! file order) and lets the fsync cost be shared by everyone who queued while the last one ran.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;

use tokio::sync::oneshot;

use crate::error::WalError;
use crate::metrics::Metrics;
use crate::segment::{self, ActiveSegment, FRAME_HEADER};

pub(crate) type Reply = oneshot::Sender<Result<u64, WalError>>;

pub(crate) enum Request {
    Append {
        payload: Vec<u8>,
        reply: Reply,
    },
    Rotate {
        reply: Reply,
    },
    /// Everything queued before this is still served; the thread exits after it.
    Shutdown,
}

/// State read outside the writer thread.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub metrics: Metrics,
    /// Id of the segment being written; segments below it are sealed and may be deleted.
    pub active_segment: AtomicU64,
    #[cfg(test)]
    pub faults: std::sync::Mutex<std::collections::VecDeque<Fault>>,
}

/// Test-only failures, consumed one per group commit.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// Write the first half of the group, then fail with ENOSPC (a disk filling up mid-write).
    WriteStorageFull,
    /// Write the group, then report the fsync as failed (EIO).
    SyncFails,
    /// Stall before the fsync, so concurrent appends pile up behind it deterministically.
    SyncDelay(std::time::Duration),
}

pub(crate) struct Writer {
    shared: std::sync::Arc<Shared>,
    segment_bytes: u64,
    max_group_bytes: usize,
    /// Next sequence number to hand out. Numbers of a failed group are burned, never reused: if
    /// the failed bytes survive after all, they must not collide with later records.
    next_seq: u64,
    /// `None` after a segment could not be created or had to be abandoned; the next group (or
    /// rotation) retries creating one.
    current: Option<ActiveSegment>,
    /// Reused encode buffer, so steady state does not allocate per group.
    buf: Vec<u8>,
    /// Held for the thread's lifetime: the directory is ours until the last write is done.
    _lock: File,
}

struct Append {
    payload: Vec<u8>,
    reply: Reply,
}

impl Writer {
    pub fn new(
        shared: std::sync::Arc<Shared>,
        config: &crate::WalConfig,
        next_seq: u64,
        current: ActiveSegment,
        lock: File,
    ) -> Self {
        Writer {
            shared,
            segment_bytes: config.segment_bytes,
            max_group_bytes: config.max_group_bytes,
            next_seq,
            current: Some(current),
            buf: Vec::new(),
            _lock: lock,
        }
    }

    pub fn run(mut self, rx: Receiver<Request>) {
        // An append taken off the queue that did not fit the previous group.
        let mut carry: Option<Request> = None;
        loop {
            let first = match carry.take() {
                Some(request) => request,
                None => match rx.recv() {
                    Ok(request) => request,
                    Err(_) => break, // every Wal handle is gone
                },
            };
            let mut group = Vec::new();
            let mut group_bytes = 0usize;
            let mut control = None;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Append { payload, reply } => {
                        let framed = FRAME_HEADER + payload.len();
                        if !group.is_empty() && group_bytes + framed > self.max_group_bytes {
                            carry = Some(Request::Append { payload, reply });
                            break;
                        }
                        group_bytes += framed;
                        group.push(Append { payload, reply });
                    }
                    // Control requests end the group: whatever was queued before them must be
                    // committed (in the current segment) before they act.
                    other => {
                        control = Some(other);
                        break;
                    }
                }
                next = rx.try_recv().ok();
            }
            if !group.is_empty() {
                self.commit(group);
            }
            match control {
                Some(Request::Rotate { reply }) => {
                    let _ = reply.send(self.rotate());
                }
                Some(Request::Shutdown) => break,
                _ => {}
            }
        }
        tracing::debug!(dir = %self.shared.dir.display(), "WAL writer stopped");
        // Dropping `rx` here answers requests queued after Shutdown with Closed.
    }

    fn commit(&mut self, group: Vec<Append>) {
        let count = group.len() as u64;
        let first_seq = self.next_seq;
        let Some(end_seq) = first_seq.checked_add(count) else {
            return answer_err(group, &WalError::SequenceExhausted);
        };
        self.buf.clear();
        for (seq, append) in (first_seq..).zip(&group) {
            segment::encode(&mut self.buf, seq, &append.payload);
        }
        self.next_seq = end_seq;

        match self.write_group(count) {
            Ok(()) => {
                self.shared.metrics.add_appends(count);
                for (seq, append) in (first_seq..).zip(group) {
                    // A dropped receiver is a cancelled append; its record is durable anyway.
                    let _ = append.reply.send(Ok(seq));
                }
            }
            Err(error) => {
                self.shared.metrics.add_write_error();
                tracing::warn!(%error, records = count, "WAL group commit failed; none acknowledged");
                answer_err(group, &error);
            }
        }
        self.roll_if_full();
    }

    /// Writes and fsyncs `self.buf` into the active segment. On failure the segment is left so
    /// that the next successful group never lands behind garbage.
    fn write_group(&mut self, records: u64) -> Result<(), WalError> {
        if self.current.is_none() {
            self.roll()?;
        }
        let Some(seg) = self.current.as_mut() else { unreachable!("roll() sets a segment") };
        #[cfg(test)]
        let fault = self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()).pop_front();

        let written = (|| {
            // Positioned explicitly: after a failed group the cursor may sit past `len`.
            seg.file.seek(SeekFrom::Start(seg.len))?;
            #[cfg(test)]
            if let Some(Fault::WriteStorageFull) = fault {
                seg.file.write_all(&self.buf[..self.buf.len() / 2])?;
                return Err(std::io::ErrorKind::StorageFull.into());
            }
            seg.file.write_all(&self.buf)
        })();
        if let Err(e) = written {
            let error = WalError::io(format!("writing WAL segment {}", seg.path.display()), e);
            // Cut the partial group off so a later append does not follow garbage (replay would
            // stop at the garbage and never see the later, acknowledged record).
            if let Err(cut) = seg.file.set_len(seg.len) {
                tracing::error!(segment = %seg.path.display(), error = %cut,
                    "cannot cut WAL segment back after failed write; abandoning it");
                self.current = None;
            }
            return Err(error);
        }
        self.shared.metrics.add_bytes_written(self.buf.len() as u64);

        #[cfg(test)]
        if let Some(Fault::SyncDelay(delay)) = fault {
            std::thread::sleep(delay);
        }
        let synced = segment::sync_data(&seg.file, &self.shared.metrics);
        #[cfg(test)]
        let synced = match fault {
            Some(Fault::SyncFails) => Err(std::io::Error::other("injected fsync failure")),
            _ => synced,
        };
        if let Err(e) = synced {
            let error = WalError::io(format!("syncing WAL segment {}", seg.path.display()), e);
            // After a failed fsync the kernel may have dropped the dirty pages and will report
            // success next time, so retrying would ack data that is not on disk. Cut the group
            // off (best effort), seal this segment and carry on in a fresh one.
            tracing::error!(segment = %seg.path.display(), %error,
                "WAL fsync failed; sealing the segment and starting a new one");
            let _ = seg.file.set_len(seg.len);
            self.current = None;
            if let Err(roll) = self.roll() {
                tracing::error!(error = %roll, "cannot start a new WAL segment; will retry");
            }
            return Err(error);
        }
        seg.len += self.buf.len() as u64;
        seg.records += records;
        Ok(())
    }

    /// Seals the active segment (if it holds records) and returns the id of the one now active.
    fn rotate(&mut self) -> Result<u64, WalError> {
        match &self.current {
            // Nothing in it: every earlier record already lives below its id, which is all a
            // rotation promises; creating another file would only collide with this one.
            Some(seg) if seg.records == 0 => Ok(seg.id),
            _ => {
                self.roll()?;
                Ok(self.next_seq)
            }
        }
    }

    fn roll_if_full(&mut self) {
        let full = self.current.as_ref().is_some_and(|seg| seg.records > 0 && seg.len >= self.segment_bytes);
        if full && let Err(error) = self.roll() {
            tracing::error!(%error, "cannot start a new WAL segment; will retry on next append");
        }
    }

    /// Drops the active segment (its records are already fsynced) and creates `next_seq`'s.
    fn roll(&mut self) -> Result<(), WalError> {
        self.current = None;
        let id = self.next_seq;
        let seg = segment::create(&self.shared.dir, id, &self.shared.metrics).map_err(|e| {
            let path = segment::path(&self.shared.dir, id);
            WalError::io(format!("creating WAL segment {}", path.display()), e)
        })?;
        self.shared.active_segment.store(id, Ordering::Release);
        self.shared.metrics.segment_created();
        tracing::debug!(segment = %seg.path.display(), "WAL segment started");
        self.current = Some(seg);
        Ok(())
    }
}

fn answer_err(group: Vec<Append>, error: &WalError) {
    for append in group {
        let _ = append.reply.send(Err(error.duplicate()));
    }
}
