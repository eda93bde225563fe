//! The store: schema check → WAL (durable ack) → write buffer → Parquet snapshots.

use crate::buffer::{TableBuffer, concat_aligned, estimate_bytes};
use crate::latest::LatestRows;
use crate::manifest::{FileMeta, Manifest, TableManifest};
use crate::metrics::{StoreMetrics, TableCounters};
use crate::persist::NANOS_PER_DAY;
use crate::points::{PointIndex, last_write_wins};
use crate::schema::{NewColumns, TableSchema};
use crate::{StoreError, record};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use corral_model::{Batch, Row};
use corral_wal::{Wal, WalConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, RwLock};

mod compact;
mod group;
mod purge;

pub use purge::{AgeRule, RowRule, TenantCutoff};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Holds `wal/`, `tables/` and `manifest.json`.
    pub dir: PathBuf,
    /// Most bytes of unpersisted rows held in memory; writers wait, then get 503, above it.
    pub buffer_ceiling_bytes: usize,
    /// Persist when the buffer holds this much...
    pub persist_bytes: usize,
    /// ...or when its oldest row has waited this long.
    pub persist_age: Duration,
    /// How long a writer waits for room under the ceiling before it is told to retry.
    pub backpressure_wait: Duration,
    pub wal_segment_bytes: u64,
    /// A table never grows beyond this many columns (400 for the request that would).
    pub max_columns_per_table: usize,
    /// One request may span at most this many UTC days (each day is a Parquet partition).
    pub max_days_per_request: usize,
    /// A table's day partition with this many files is compacted into one...
    pub compact_min_files: usize,
    /// ...merging at most this many bytes of Parquet at once (bounds compaction's memory).
    pub compact_max_bytes: u64,
    /// How long a compacted-away file stays on disk for queries that may still read it.
    pub retired_grace: Duration,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            buffer_ceiling_bytes: 256 << 20,
            persist_bytes: 64 << 20,
            persist_age: Duration::from_secs(600),
            backpressure_wait: Duration::from_secs(10),
            wal_segment_bytes: 64 << 20,
            max_columns_per_table: 1000,
            max_days_per_request: 400,
            compact_min_files: 8,
            compact_max_bytes: 16 << 20,
            retired_grace: Duration::from_secs(600),
        }
    }
}

/// One table's live state: its schema, unpersisted rows and committed files.
struct TableState {
    schema: TableSchema,
    buffer: TableBuffer,
    buffer_bytes: usize,
    counters: Arc<TableCounters>,
    /// Each device's newest row, for `latest.<table>` in SQL.
    latest: LatestRows,
    /// Which rows may repeat a stored point, and the UTC days of those in the buffer.
    points: PointIndex,
    dirty_days: BTreeSet<i64>,
    /// For a table a rollup reads: the minutes (see [`CHANGE_GRANULE_NS`]) rows landed in since
    /// the rollup last took them.
    changes: Option<Changes>,
}

/// Rollups recompute the buckets whose rows changed; the store notes where rows land at this
/// granularity (every rollup's bucket width is a multiple of it).
pub const CHANGE_GRANULE_NS: i64 = 60_000_000_000;

#[derive(Default)]
struct Changes {
    granules: BTreeSet<i64>,
    /// The last granule noted: rows mostly arrive in time order, so most skip the set.
    last: Option<i64>,
}

impl Changes {
    fn note(&mut self, rows: &[Row]) {
        for row in rows {
            let granule = row.time_ns.div_euclid(CHANGE_GRANULE_NS);
            if self.last != Some(granule) {
                self.granules.insert(granule);
                self.last = Some(granule);
            }
        }
    }
}

impl TableState {
    /// Takes rows just made durable into the buffer and the latest rows, noting the days where
    /// one may repeat a stored point (see `points.rs`). Returns what they cost in the buffer.
    fn take_rows(&mut self, rows: &[Row]) -> usize {
        for row in rows {
            if self.points.may_repeat(row) {
                self.dirty_days.insert(row.time_ns.div_euclid(NANOS_PER_DAY));
            }
        }
        self.points.bound(|| self.latest.newest_times());
        if let Some(changes) = &mut self.changes {
            changes.note(rows);
        }
        self.buffer.append(&self.schema, rows);
        self.latest.observe(rows, &self.schema);
        let bytes = estimate_bytes(rows, self.schema.columns().len());
        self.buffer_bytes += bytes;
        bytes
    }
}

/// Rows taken from a buffer by a snapshot, still visible to queries until their files commit.
#[derive(Clone)]
struct Persisting {
    table: String,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// The table's latest rows at the snapshot, which cover every row in `batches`.
    latest: RecordBatch,
    bytes: usize,
    /// Days where a row of `batches` may repeat a stored point; `keys` identify a point.
    dirty_days: BTreeSet<i64>,
    keys: Vec<usize>,
}

struct State {
    tables: BTreeMap<String, TableState>,
    persisting: Vec<Persisting>,
    manifest: Manifest,
    oldest_unpersisted: Option<Instant>,
    /// Files compaction replaced, with when; deleted once their grace period is over.
    retired: Vec<(PathBuf, Instant)>,
    /// Tables whose changes are noted (rollup sources), including some that have no rows yet.
    watched: BTreeSet<String>,
}

impl State {
    fn table(&mut self, name: &str) -> &mut TableState {
        let watched = self.watched.contains(name);
        self.tables.entry(name.to_string()).or_insert_with(|| {
            let schema = TableSchema::default();
            TableState {
                buffer: TableBuffer::new(&schema),
                schema,
                buffer_bytes: 0,
                counters: Arc::default(),
                latest: LatestRows::default(),
                points: PointIndex::default(),
                dirty_days: BTreeSet::new(),
                changes: watched.then(Changes::default),
            }
        })
    }
}

/// What a query sees of one table: buffered batches and committed files, taken together under one
/// lock so no row is seen twice or missed while a snapshot commits.
pub struct TableSnapshot {
    pub name: String,
    pub schema: SchemaRef,
    /// Buffered rows, in the order they were written.
    pub batches: Vec<RecordBatch>,
    pub files: Vec<FileMeta>,
    /// UTC days where a point may have two versions (in `batches`, in files, or across them):
    /// a query merges those with [`TableSnapshot::keys`] before reading them.
    pub dirty_days: BTreeSet<i64>,
    /// The columns that identify a point.
    pub keys: Vec<usize>,
}

/// The time-series store. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreConfig,
    wal: Wal,
    /// Writers hold it shared from WAL append to buffer insert; a snapshot holds it exclusively
    /// while it rotates the WAL and takes the buffers, so no acknowledged row can fall between.
    gate: RwLock<()>,
    state: Mutex<State>,
    /// One snapshot at a time. Owned by the task doing the snapshot, so cancelling the caller
    /// (shutdown aborting the persister) never lets a second snapshot start beside the first.
    persist_lock: Arc<tokio::sync::Mutex<()>>,
    buffer_bytes: AtomicUsize,
    room: Notify,
    persist_wanted: Notify,
    metrics: StoreMetrics,
    /// Requests waiting to be appended together; see `group.rs`.
    groups: group::Groups,
}

impl Store {
    /// Opens the store: loads the manifest, removes files of an unfinished snapshot, replays the
    /// WAL into the write buffer. Blocking; call before serving.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.dir).map_err(StoreError::io(format!("creating {}", config.dir.display())))?;
        let manifest = Manifest::load(&config.dir).map_err(StoreError::io("reading manifest.json"))?;
        if manifest.tables.is_empty() && has_entries(&config.dir.join("tables")) {
            // Without a manifest every file would look like an unfinished snapshot and be deleted.
            return Err(StoreError::Io {
                context: format!("{} has Parquet data but no manifest.json", config.dir.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "refusing to start: restore manifest.json, or move tables/ away to start empty",
                ),
            });
        }
        manifest.remove_orphans(&config.dir).map_err(StoreError::io("removing unfinished snapshot files"))?;
        let watched = manifest.tables.iter().filter(|(_, t)| t.changes.is_some()).map(|(name, _)| name.clone()).collect();
        let mut state = State {
            tables: BTreeMap::new(),
            persisting: Vec::new(),
            manifest,
            oldest_unpersisted: None,
            retired: Vec::new(),
            watched,
        };
        for (name, t) in &state.manifest.tables.clone() {
            let table = state.table(name);
            if let (Some(changes), Some(saved)) = (&mut table.changes, &t.changes) {
                changes.granules.extend(saved);
            }
            table.schema = TableSchema::from_columns(t.columns.clone());
            table.buffer = TableBuffer::new(&table.schema);
            if let Some(path) = &t.latest {
                let batch = crate::persist::read_latest(&config.dir.join(path), &table.schema.arrow())
                    .map_err(StoreError::io(format!("reading {path}")))?;
                table.latest = LatestRows::with_persisted(batch);
                table.points = PointIndex::with_floors(table.latest.newest_times());
            }
        }
        let floor = state.manifest.wal_floor;
        let mut wal_config = WalConfig::new(config.dir.join("wal"));
        wal_config.start_seq = floor;
        wal_config.segment_bytes = config.wal_segment_bytes;
        let mut replayed_bytes = 0usize;
        let mut skipped = 0u64;
        let (wal, report) = Wal::open(wal_config, |rec| {
            if rec.seq < floor {
                skipped += 1; // already in Parquet: the crash came between manifest commit and WAL truncation
                return;
            }
            match record::decode(rec.payload) {
                Ok(batches) => replayed_bytes += apply(&mut state, &batches),
                Err(e) => tracing::error!(seq = rec.seq, error = %e, "skipping undecodable WAL record"),
            }
        })?;
        if !state.tables.values().all(|t| t.buffer.rows() == 0) {
            state.oldest_unpersisted = Some(Instant::now());
        }
        tracing::info!(
            segments = report.segments,
            records = report.records,
            skipped_persisted = skipped,
            damaged = report.damage.len(),
            "WAL replayed"
        );
        let inner = Inner {
            config,
            wal,
            gate: RwLock::new(()),
            state: Mutex::new(state),
            persist_lock: Arc::new(tokio::sync::Mutex::new(())),
            buffer_bytes: AtomicUsize::new(replayed_bytes),
            room: Notify::new(),
            persist_wanted: Notify::new(),
            metrics: StoreMetrics::default(),
            groups: group::Groups::default(),
        };
        Ok(Store { inner: Arc::new(inner) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores every batch of one request, atomically: either all rows become durable (the call
    /// returns after the WAL fsync that holds them) or none is stored. The batches come back once
    /// durable, so whoever reacts to them (rules) reads them without a copy.
    pub async fn write(&self, batches: Vec<Batch>) -> Result<Vec<Batch>, StoreError> {
        check_days(&batches, self.inner.config.max_days_per_request)?;
        self.claim_columns(&batches)?;
        self.wait_for_room().await?;
        // From here on only storage can fail, the same way for every request: the request joins
        // a group that shares one WAL record (see `group.rs`). The group's append runs as its own
        // task, so a client that disconnects after this point still gets its rows stored.
        self.append_grouped(batches).await
    }

    /// Appends the batches of several requests as one WAL record, then buffers them.
    async fn append_and_buffer(&self, requests: &[Vec<Batch>]) -> Result<(), StoreError> {
        let batches = || requests.iter().flatten();
        let (payload, batch_bytes) = record::encode_with_sizes(batches());
        let _gate = self.inner.gate.read().await;
        if let Err(e) = self.inner.wal.append(payload).await {
            self.inner.metrics.failed_writes.fetch_add(1, Ordering::Relaxed);
            return Err(if e.is_storage_full() { StoreError::DiskFull } else { StoreError::Wal(e) });
        }
        let mut state = self.state();
        let mut bytes = 0;
        for (batch, encoded) in batches().zip(batch_bytes) {
            let table = state.table(batch.table.as_str());
            bytes += table.take_rows(&batch.rows);
            table.counters.record(batch.rows.len(), batch.value_count(), encoded);
        }
        state.oldest_unpersisted.get_or_insert_with(Instant::now);
        drop(state);
        if self.inner.buffer_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes >= self.inner.config.persist_bytes {
            self.inner.persist_wanted.notify_one();
        }
        Ok(())
    }

    /// Schema on write: checks every batch of the request, then adds all new columns at once.
    fn claim_columns(&self, batches: &[Batch]) -> Result<(), StoreError> {
        let max_columns = self.inner.config.max_columns_per_table;
        let mut state = self.state();
        let mut claims: HashMap<&str, NewColumns> = HashMap::new();
        for batch in batches {
            let pending = claims.entry(batch.table.as_str()).or_default();
            let result = match state.tables.get(batch.table.as_str()) {
                Some(t) => t.schema.check(batch, pending, max_columns),
                None => TableSchema::default().check(batch, pending, max_columns),
            };
            result.map_err(StoreError::Schema)?;
        }
        for (table, new) in claims {
            if !new.columns.is_empty() {
                state.table(table).schema.extend(new.columns);
            }
        }
        Ok(())
    }

    /// Backpressure: above the ceiling a writer waits for a snapshot to free memory, then gives up.
    async fn wait_for_room(&self) -> Result<(), StoreError> {
        let ceiling = self.inner.config.buffer_ceiling_bytes;
        if self.inner.buffer_bytes.load(Ordering::Relaxed) < ceiling {
            return Ok(());
        }
        self.inner.metrics.backpressure_waits.fetch_add(1, Ordering::Relaxed);
        self.inner.persist_wanted.notify_one();
        let deadline = tokio::time::Instant::now() + self.inner.config.backpressure_wait;
        loop {
            // Register for the wake-up before checking, so a snapshot finishing in between is not missed.
            let freed = self.inner.room.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.inner.buffer_bytes.load(Ordering::Relaxed) < ceiling {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                self.inner.metrics.rejected_overload.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Overloaded { ceiling_bytes: ceiling });
            }
        }
    }

    /// Takes every buffer to Parquet, commits the files in the manifest, then drops the WAL
    /// segments they cover. Returns the number of files written.
    pub async fn persist(&self) -> Result<usize, StoreError> {
        let one_at_a_time = self.inner.persist_lock.clone().lock_owned().await;
        let store = self.clone();
        tokio::spawn(async move {
            let _held_until_done = one_at_a_time;
            store.persist_locked().await
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)?
    }

    async fn persist_locked(&self) -> Result<usize, StoreError> {
        let floor = {
            let _gate = self.inner.gate.write().await;
            let floor = self.inner.wal.rotate().await?;
            let mut state = self.state();
            let mut taken = Vec::new();
            for (name, table) in state.tables.iter_mut() {
                if table.buffer.rows() > 0 {
                    let batches = table.buffer.take(&table.schema);
                    taken.push(Persisting {
                        table: name.clone(),
                        schema: table.schema.arrow(),
                        batches,
                        latest: table.latest.batch_for_file(&table.schema),
                        bytes: std::mem::take(&mut table.buffer_bytes),
                        dirty_days: std::mem::take(&mut table.dirty_days),
                        keys: table.schema.key_columns(),
                    });
                }
            }
            state.persisting.extend(taken);
            state.oldest_unpersisted = None;
            floor
        };
        let started = Instant::now();
        let (jobs, mut manifest) = {
            let state = self.state();
            let jobs: Vec<Persisting> = state.persisting.clone();
            (jobs, state.manifest.clone())
        };
        let job_count = jobs.len();
        let dir = self.inner.config.dir.clone();
        let next_file_id = manifest.next_file_id;
        let stored: HashMap<String, Vec<FileMeta>> = jobs
            .iter()
            .filter(|job| !job.dirty_days.is_empty())
            .map(|job| (job.table.clone(), manifest.tables.get(&job.table).map(|t| t.files.clone()).unwrap_or_default()))
            .collect();
        let written = tokio::task::spawn_blocking(move || {
            let mut next = next_file_id;
            let mut out = Vec::new();
            for Persisting { table, schema, batches, latest, mut dirty_days, keys, .. } in jobs {
                let mut all = concat_aligned(&schema, &batches);
                if !dirty_days.is_empty() {
                    // No file holds two versions of a point; the days where this batch repeats
                    // a point of an older file stay dirty until compaction, the others are
                    // clean (their rows only arrived out of order).
                    all = last_write_wins(&all, &keys).expect("the keys are columns of the batch");
                    let files = stored.get(&table).map(Vec::as_slice).unwrap_or_default();
                    match crate::points::days_with_repeats(&dir, &all, &keys, files, &dirty_days) {
                        Ok(days) => dirty_days = days,
                        Err(e) => tracing::warn!(%table, error = %e, "could not check repeated points; their days stay dirty"),
                    }
                }
                let written = crate::persist::write_table(&dir, &table, &all, &mut next).and_then(|files| {
                    let latest_path = crate::persist::write_latest(&dir, &table, &latest, &mut next)?;
                    Ok(Written { table, files, latest_path, latest, dirty_days })
                });
                match written {
                    Ok(w) => out.push(w),
                    Err(e) => {
                        // Files written so far are not in the manifest: remove them now (a restart would too).
                        for w in &out {
                            for path in w.files.iter().map(|f| &f.path).chain([&w.latest_path]) {
                                let _ = std::fs::remove_file(dir.join(path));
                            }
                        }
                        return Err((e, next));
                    }
                }
            }
            Ok((out, next))
        })
        .await
        .expect("persist task does not panic");
        let (written, next_file_id) = match written {
            Ok(w) => w,
            Err((e, next)) => {
                self.state().manifest.next_file_id = next;
                self.inner.metrics.persist_failures.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Io { context: "writing Parquet".into(), source: e });
            }
        };
        let file_count = written.iter().map(|w| w.files.len()).sum();
        {
            let state = self.state();
            for (name, table) in &state.tables {
                let saved = manifest.tables.entry(name.clone()).or_default();
                saved.columns = table.schema.columns().to_vec();
                // Rows leaving the WAL take their changes with them: the manifest keeps those a
                // rollup has not taken yet.
                saved.changes = table.changes.as_ref().map(|c| c.granules.clone());
            }
        }
        let mut replaced_latest = Vec::new();
        for w in &written {
            let table = manifest.tables.entry(w.table.clone()).or_insert_with(TableManifest::default);
            table.files.extend(w.files.iter().cloned());
            table.dirty_days.extend(&w.dirty_days);
            replaced_latest.extend(table.latest.replace(w.latest_path.clone()));
        }
        manifest.wal_floor = floor;
        manifest.next_file_id = next_file_id;
        let dir = self.inner.config.dir.clone();
        let saved = manifest.clone();
        tokio::task::spawn_blocking(move || saved.save(&dir))
            .await
            .expect("manifest save does not panic")
            .map_err(StoreError::io("committing manifest.json"))?;
        let freed: usize = {
            let mut state = self.state();
            let committed: Vec<Persisting> = state.persisting.drain(..job_count).collect();
            state.manifest = manifest;
            for w in written {
                state.table(&w.table).latest.set_persisted(w.latest);
            }
            committed.iter().map(|p| p.bytes).sum()
        };
        self.inner.buffer_bytes.fetch_sub(freed.min(self.inner.buffer_bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
        self.inner.room.notify_waiters();
        for path in replaced_latest {
            // Queries hold latest rows in memory, never this file: it can go at once.
            let _ = std::fs::remove_file(self.inner.config.dir.join(path));
        }
        self.inner.wal.remove_segments_before(floor)?;
        self.inner.metrics.persist_seconds_total.record(started.elapsed());
        tracing::info!(
            files = file_count,
            tables = job_count,
            ms = started.elapsed().as_millis() as u64,
            "persisted buffers to Parquet"
        );
        Ok(file_count)
    }

    /// Runs until the task is dropped: persists when the buffer is big or old enough, compacts
    /// partitions that collected many files, deletes compacted-away files after their grace.
    pub async fn run_persister(self) {
        let mut last_compaction = Instant::now();
        loop {
            if last_compaction.elapsed() >= Duration::from_secs(60) {
                last_compaction = Instant::now();
                if let Err(e) = self.compact().await {
                    tracing::error!(error = %e, "compaction failed; the files stay as they are");
                }
                self.remove_retired();
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.persist_wanted.notified()).await;
            let bytes = self.inner.buffer_bytes.load(Ordering::Relaxed);
            let old = self.state().oldest_unpersisted.is_some_and(|t| t.elapsed() >= self.inner.config.persist_age);
            let due = bytes >= self.inner.config.persist_bytes || old || self.has_failed_persist();
            if due && let Err(e) = self.persist().await {
                tracing::error!(error = %e, "persisting the write buffer failed; data stays in the WAL, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    fn has_failed_persist(&self) -> bool {
        !self.state().persisting.is_empty()
    }

    /// Flushes everything to Parquet and stops the WAL writer. Call once, at shutdown.
    pub async fn close(&self) -> Result<(), StoreError> {
        let result = self.persist().await;
        self.inner.wal.shutdown();
        result.map(|_| ())
    }

    /// Every table as a query sees it now.
    pub fn snapshot(&self) -> Vec<TableSnapshot> {
        let mut state = self.state();
        let names: Vec<String> = state.tables.keys().cloned().collect();
        names.into_iter().filter_map(|name| self.snapshot_locked(&mut state, &name)).collect()
    }

    pub fn snapshot_table(&self, name: &str) -> Option<TableSnapshot> {
        let mut state = self.state();
        self.snapshot_locked(&mut state, name)
    }

    fn snapshot_locked(&self, state: &mut State, name: &str) -> Option<TableSnapshot> {
        let (files, mut dirty_days) =
            state.manifest.tables.get(name).map(|t| (t.files.clone(), t.dirty_days.clone())).unwrap_or_default();
        let persisting = state.persisting.iter().filter(|p| p.table == name);
        dirty_days.extend(persisting.clone().flat_map(|p| &p.dirty_days));
        let persisting: Vec<RecordBatch> = persisting.flat_map(|p| p.batches.clone()).collect();
        let table = state.tables.get_mut(name)?;
        dirty_days.extend(&table.dirty_days);
        let schema = table.schema.arrow();
        let mut batches: Vec<RecordBatch> = persisting.iter().map(|b| crate::buffer::align(&schema, b)).collect();
        batches.extend(table.buffer.snapshot(&table.schema));
        let keys = table.schema.key_columns();
        Some(TableSnapshot { name: name.to_string(), schema, batches, files, dirty_days, keys })
    }

    /// Each device's latest row in `name` (see `latest.rs`), with the table's schema.
    pub fn latest_rows(&self, name: &str) -> Option<RecordBatch> {
        let state = self.state();
        let table = state.tables.get(name)?;
        Some(table.latest.batch(&table.schema))
    }

    /// Starts noting where `table`'s rows land (for a rollup that reads it), beginning with the
    /// rows in the write buffer, which may be rows replayed from the WAL that no rollup saw.
    pub fn watch_changes(&self, table: &str) {
        let mut state = self.state();
        state.watched.insert(table.to_string());
        let Some(snapshot) = self.snapshot_locked(&mut state, table) else { return };
        let live = state.tables.get_mut(table).expect("the snapshot found it");
        let changes = live.changes.get_or_insert_with(Changes::default);
        for batch in &snapshot.batches {
            let times = batch.column(0).as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            changes.granules.extend(times.values().iter().map(|t| t.div_euclid(CHANGE_GRANULE_NS)));
        }
    }

    /// Stops noting `table`'s changes (its last rollup is gone).
    pub fn unwatch_changes(&self, table: &str) {
        let mut state = self.state();
        state.watched.remove(table);
        if let Some(live) = state.tables.get_mut(table) {
            live.changes = None;
        }
    }

    /// The granules (Unix time / [`CHANGE_GRANULE_NS`]) where `table`'s rows landed and that
    /// have not been acknowledged with [`Store::ack_changes`].
    pub fn changes(&self, table: &str) -> Vec<i64> {
        let state = self.state();
        state.tables.get(table).and_then(|t| t.changes.as_ref()).map(|c| c.granules.iter().copied().collect()).unwrap_or_default()
    }

    /// Forgets granules a rollup has taken into its own durable queue.
    pub fn ack_changes(&self, table: &str, granules: &[i64]) {
        let mut state = self.state();
        if let Some(changes) = state.tables.get_mut(table).and_then(|t| t.changes.as_mut()) {
            granules.iter().for_each(|g| {
                changes.granules.remove(g);
            });
            changes.last = None;
        }
    }

    /// A table's columns, `time` and `device` first; `None` if there is no such table.
    pub fn columns(&self, table: &str) -> Option<Vec<crate::Column>> {
        self.state().tables.get(table).map(|t| t.schema.columns().to_vec())
    }

    /// The UTC days (days since 1970-01-01) that hold `table`'s rows, stored or buffered.
    pub fn days_with_rows(&self, table: &str) -> BTreeSet<i64> {
        let mut state = self.state();
        let Some(snapshot) = self.snapshot_locked(&mut state, table) else { return BTreeSet::new() };
        let mut days: BTreeSet<i64> = snapshot.files.iter().map(|f| f.min_time_ns.div_euclid(NANOS_PER_DAY)).collect();
        for batch in &snapshot.batches {
            let times = batch.column(0).as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            days.extend(times.values().iter().map(|t| t.div_euclid(NANOS_PER_DAY)));
        }
        days
    }

    pub fn table_names(&self) -> Vec<String> {
        self.state().tables.keys().cloned().collect()
    }

    pub fn has_table(&self, name: &str) -> bool {
        self.state().tables.contains_key(name)
    }

    /// The columns of `name` a tenant-scoped query may see: `time`, `device` and every column
    /// one of `devices` has written; `None` if there is no such table.
    pub fn columns_written_by<'a>(&self, name: &str, devices: impl Iterator<Item = &'a str>) -> Option<Vec<usize>> {
        let state = self.state();
        let written = state.tables.get(name)?.latest.written_by(devices);
        Some([0, 1].into_iter().chain(written.positions().filter(|&c| c > 1)).collect())
    }

    /// Whether one of `devices` has written to `name` (a tenant-scoped query sees only the
    /// tables its devices wrote). Costs a lookup per device until one is found.
    pub fn table_has_any_device<'a>(&self, name: &str, mut devices: impl Iterator<Item = &'a str>) -> bool {
        self.state().tables.get(name).is_some_and(|t| devices.any(|d| t.latest.has_device(d)))
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.inner.config.dir
    }

    pub fn metrics(&self) -> crate::metrics::StoreMetricsSnapshot {
        let state = self.state();
        let tables = state.tables.iter().map(|(n, t)| (n.clone(), t.counters.snapshot())).collect();
        let (files, file_bytes) =
            state.manifest.tables.values().flat_map(|t| &t.files).fold((0u64, 0u64), |(n, b), f| (n + 1, b + f.size_bytes));
        drop(state);
        self.inner.metrics.snapshot(
            tables,
            self.inner.buffer_bytes.load(Ordering::Relaxed),
            files,
            file_bytes,
            self.inner.wal.metrics(),
        )
    }
}

/// What a snapshot wrote for one table, not yet committed.
struct Written {
    table: String,
    files: Vec<FileMeta>,
    latest_path: String,
    latest: RecordBatch,
    dirty_days: BTreeSet<i64>,
}

fn has_entries(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// Each UTC day a request touches becomes a Parquet partition; a request may not scatter rows
/// over more days than the limit (a device with a wild clock could otherwise create thousands).
fn check_days(batches: &[Batch], max_days: usize) -> Result<(), StoreError> {
    let mut days = std::collections::HashSet::new();
    for row in batches.iter().flat_map(|b| &b.rows) {
        days.insert(row.time_ns.div_euclid(NANOS_PER_DAY));
        if days.len() > max_days {
            return Err(StoreError::Schema(corral_model::WireError::bad_input(format!(
                "the request's timestamps span more than {max_days} UTC days; send long backfills in \
                 smaller requests (nothing from this request was stored)"
            ))));
        }
    }
    Ok(())
}

/// Replays one WAL record into the buffers, extending schemas as the original write did.
fn apply(state: &mut State, batches: &[Batch]) -> usize {
    let mut bytes = 0;
    for batch in batches {
        let table = state.table(batch.table.as_str());
        let mut pending = NewColumns::default();
        if let Err(e) = table.schema.check(batch, &mut pending, usize::MAX) {
            // Cannot happen for records this server wrote; keep the rest of the row (the
            // conflicting value becomes null) rather than drop acknowledged data.
            tracing::error!(table = %batch.table, error = %e, "replayed record conflicts with the schema");
        }
        table.schema.extend(pending.columns);
        bytes += table.take_rows(&batch.rows);
        table.counters.record(batch.rows.len(), batch.value_count(), 0);
    }
    bytes
}
