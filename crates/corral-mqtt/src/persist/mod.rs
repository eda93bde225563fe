//! Durable broker state: an operation log on `corral-wal` plus periodic snapshots.
//!
//! Whoever changes durable state (a persistent session's subscriptions, queue, inflight or
//! inbound QoS 2 ids; a retained message) sends an [`Op`] to the single writer task *while
//! holding* [`Persist::gate`] for reading and in the same critical section as the in-memory
//! change. The writer batches whatever queued up during the previous fsync into one WAL record
//! (group commit on top of the WAL's own), then answers barriers: a QoS 1/2 publisher asks for a
//! [`Persist::barrier`] after routing and acknowledges only once it resolves.
//!
//! Snapshot: the writer takes the gate for writing just long enough to put a marker in its own
//! queue (so every op before the marker has its memory effect done), rotates the WAL at the
//! marker, captures the state and writes `snapshot.bin` atomically (temp file, fsync, rename,
//! fsync dir), then deletes the segments before the rotation point. Recovery loads the snapshot
//! and replays the remaining segments; ops are idempotent "set"s, so overlap is harmless.

mod op;
mod recover;
mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, Weak};

use corral_wal::{Wal, WalConfig};
use tokio::sync::{mpsc, oneshot};

pub(crate) use op::{Op, RouteTarget};
pub(crate) use recover::{Recovered, RecoveredSession};

use crate::error::BrokerError;

/// Group commits above this size are cut (the WAL caps a record at 256 MiB).
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Produces the ops that rebuild the current durable state (implemented by the broker).
pub(crate) trait StateCapture: Send + Sync + 'static {
    fn capture(&self) -> Vec<Op>;
}

enum Cmd {
    Op(Vec<u8>),
    Barrier(oneshot::Sender<bool>),
    Marker,
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the state writer; lives in the broker state.
pub(crate) struct Persist {
    tx: mpsc::UnboundedSender<Cmd>,
    gate: Arc<RwLock<()>>,
}

/// The opened state directory before the writer runs.
pub(crate) struct Opened {
    pub recovered: Recovered,
    wal: Wal,
    dir: PathBuf,
}

/// Loads `dir` (snapshot + log). Fails loudly on damage other than a torn log tail.
pub(crate) fn open(dir: &Path) -> Result<Opened, BrokerError> {
    std::fs::create_dir_all(dir).map_err(|e| BrokerError::io(format!("creating MQTT state directory {}", dir.display()), e))?;
    let mut recovered = Recovered::default();
    let base = snapshot::read(dir, |op| recovered.apply(op))?;
    let mut damage = None;
    let (wal, report) = Wal::open(WalConfig::new(dir.join("wal")), |record| {
        if let Err(e) = op::unframe(record.payload, |op| recovered.apply(op)) {
            damage.get_or_insert(format!("record {}: {e}", record.seq));
        }
    })?;
    if let Some(message) = damage {
        return Err(BrokerError::State { path: dir.display().to_string(), message });
    }
    if let Some(base) = base {
        // Left over when a crash hit between writing the snapshot and deleting what it covers.
        wal.remove_segments_before(base)?;
    }
    tracing::info!(dir = %dir.display(), sessions = recovered.sessions.len(),
        retained = recovered.retained.len(), log_records = report.records, "MQTT state recovered");
    Ok(Opened { recovered, wal, dir: dir.to_owned() })
}

impl Persist {
    /// Starts the writer task. `snapshot_every_ops` ops after the last snapshot trigger the next.
    pub fn start(opened: Opened, state: Weak<dyn StateCapture>, snapshot_every_ops: u64) -> (Persist, Recovered) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gate = Arc::new(RwLock::new(()));
        let writer = Writer {
            wal: opened.wal,
            dir: opened.dir,
            state,
            gate: gate.clone(),
            self_tx: tx.downgrade(),
            snapshot_every_ops,
            ops_since_snapshot: opened.recovered.ops,
            snapshot_running: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(writer.run(rx));
        (Persist { tx, gate }, opened.recovered)
    }

    /// Held (shared) across "change memory + log op" so a snapshot never splits the two.
    pub fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `op` (call with the gate held, inside the critical section of the change).
    pub fn log(&self, op: &Op) {
        let mut bytes = Vec::with_capacity(64);
        op::frame(op, &mut bytes);
        // A closed writer only happens during shutdown; the op is then covered by the final
        // snapshot or lost with a crash that was going to happen anyway.
        let _ = self.tx.send(Cmd::Op(bytes));
    }

    /// Resolves `true` once every op logged before it is durable (`false` if writing failed).
    pub fn barrier(&self) -> oneshot::Receiver<bool> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Barrier(reply)).is_err() {
            let (reply, rx) = oneshot::channel();
            let _ = reply.send(false);
            return rx;
        }
        rx
    }

    /// Flushes, writes a final snapshot and closes the log.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(reply)).is_ok() {
            let _ = done.await;
        }
    }
}

struct Writer {
    wal: Wal,
    dir: PathBuf,
    state: Weak<dyn StateCapture>,
    gate: Arc<RwLock<()>>,
    self_tx: mpsc::WeakUnboundedSender<Cmd>,
    snapshot_every_ops: u64,
    ops_since_snapshot: u64,
    snapshot_running: Arc<AtomicBool>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut cmds = Vec::with_capacity(1024);
        let mut record = Vec::new();
        let mut barriers = Vec::new();
        while rx.recv_many(&mut cmds, 1024).await > 0 {
            for cmd in cmds.drain(..) {
                match cmd {
                    Cmd::Op(bytes) => {
                        record.extend_from_slice(&bytes);
                        self.ops_since_snapshot += 1;
                        if record.len() >= MAX_BATCH_BYTES {
                            self.flush(&mut record, &mut barriers).await;
                        }
                    }
                    Cmd::Barrier(reply) => barriers.push(reply),
                    Cmd::Marker => {
                        self.flush(&mut record, &mut barriers).await;
                        self.snapshot(false).await;
                    }
                    Cmd::Shutdown(reply) => {
                        self.flush(&mut record, &mut barriers).await;
                        while self.snapshot_running.load(Ordering::Acquire) {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                        self.snapshot(true).await;
                        let wal = self.wal.clone();
                        let _ = tokio::task::spawn_blocking(move || wal.shutdown()).await;
                        let _ = reply.send(());
                        return;
                    }
                }
            }
            self.flush(&mut record, &mut barriers).await;
            if self.ops_since_snapshot >= self.snapshot_every_ops && !self.snapshot_running.load(Ordering::Acquire) {
                self.ops_since_snapshot = 0;
                let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
                if let Some(tx) = self.self_tx.upgrade() {
                    let _ = tx.send(Cmd::Marker);
                }
            }
        }
    }

    /// Appends the batch (one fsync) and answers the barriers waiting on it.
    async fn flush(&mut self, record: &mut Vec<u8>, barriers: &mut Vec<oneshot::Sender<bool>>) {
        let mut ok = true;
        if !record.is_empty() {
            let batch = std::mem::take(record);
            if let Err(e) = self.wal.append(batch).await {
                tracing::error!(error = %e, "MQTT state log write failed; QoS 1/2 acknowledgements withheld");
                ok = false;
            }
        }
        for reply in barriers.drain(..) {
            let _ = reply.send(ok);
        }
    }

    /// Rotates at this point of the op stream, captures state and writes the snapshot (in the
    /// background unless `wait`), then drops the segments it covers.
    async fn snapshot(&mut self, wait: bool) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let base = match self.wal.rotate().await {
            Ok(base) => base,
            Err(e) => {
                tracing::error!(error = %e, "MQTT state snapshot skipped: WAL rotation failed");
                return;
            }
        };
        let ops = state.capture();
        drop(state);
        self.snapshot_running.store(true, Ordering::Release);
        let (dir, wal, running) = (self.dir.clone(), self.wal.clone(), self.snapshot_running.clone());
        let job = tokio::task::spawn_blocking(move || {
            match snapshot::write(&dir, base, &ops) {
                Ok(bytes) => match wal.remove_segments_before(base) {
                    Ok(removed) => tracing::debug!(bytes, removed, "MQTT state snapshot written"),
                    Err(e) => {
                        tracing::warn!(error = %e, "MQTT state snapshot: removing old segments failed")
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "MQTT state snapshot failed; the log keeps everything")
                }
            }
            running.store(false, Ordering::Release);
        });
        if wait {
            let _ = job.await;
        }
    }
}
