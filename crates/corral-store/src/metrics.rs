//! Counters the store keeps for `/metrics`. Plain atomics: the HTTP crate renders them.

use corral_services::metrics::Exposition;
use corral_wal::WalMetricsSnapshot;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Ingest counters of one table since start (replayed rows count as rows, not as bytes).
#[derive(Debug, Default)]
pub struct TableCounters {
    rows: AtomicU64,
    values: AtomicU64,
    bytes: AtomicU64,
}

impl TableCounters {
    pub fn record(&self, rows: usize, values: usize, bytes: usize) {
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.values.fetch_add(values as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> TableCountersSnapshot {
        TableCountersSnapshot {
            rows: self.rows.load(Ordering::Relaxed),
            values: self.values.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct TableCountersSnapshot {
    pub rows: u64,
    pub values: u64,
    pub bytes: u64,
}

/// A per-table metric family: name, help, and which counter of a table it reports.
type TableFamily = (&'static str, &'static str, fn(&TableCountersSnapshot) -> u64);

#[derive(Debug, Default)]
pub struct DurationCounter {
    count: AtomicU64,
    micros: AtomicU64,
}

impl DurationCounter {
    pub fn record(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct StoreMetrics {
    pub failed_writes: AtomicU64,
    pub backpressure_waits: AtomicU64,
    pub rejected_overload: AtomicU64,
    pub persist_failures: AtomicU64,
    pub persist_seconds_total: DurationCounter,
}

#[derive(Debug, Clone)]
pub struct StoreMetricsSnapshot {
    pub tables: Vec<(String, TableCountersSnapshot)>,
    pub buffer_bytes: u64,
    pub parquet_files: u64,
    pub parquet_bytes: u64,
    pub failed_writes: u64,
    pub backpressure_waits: u64,
    pub rejected_overload: u64,
    pub persists: u64,
    pub persist_seconds: f64,
    pub persist_failures: u64,
    pub wal: WalMetricsSnapshot,
}

impl StoreMetrics {
    pub fn snapshot(
        &self,
        tables: Vec<(String, TableCountersSnapshot)>,
        buffer_bytes: usize,
        parquet_files: u64,
        parquet_bytes: u64,
        wal: WalMetricsSnapshot,
    ) -> StoreMetricsSnapshot {
        StoreMetricsSnapshot {
            tables,
            buffer_bytes: buffer_bytes as u64,
            parquet_files,
            parquet_bytes,
            failed_writes: self.failed_writes.load(Ordering::Relaxed),
            backpressure_waits: self.backpressure_waits.load(Ordering::Relaxed),
            rejected_overload: self.rejected_overload.load(Ordering::Relaxed),
            persists: self.persist_seconds_total.count.load(Ordering::Relaxed),
            persist_seconds: self.persist_seconds_total.micros.load(Ordering::Relaxed) as f64 / 1e6,
            persist_failures: self.persist_failures.load(Ordering::Relaxed),
            wal,
        }
    }
}

impl StoreMetricsSnapshot {
    /// Appends Prometheus text-format lines. Counts are written as `f64`, as they always have
    /// been, so the text stays the same (it matches integer formatting below 2^53).
    pub fn render_prometheus(&self, out: &mut String) {
        let mut e = Exposition::new(out);
        self.render_tables(&mut e);
        e.gauge("corral_write_buffer_bytes", "Estimated bytes of unpersisted rows in memory.", self.buffer_bytes as f64);
        e.gauge("corral_parquet_files", "Parquet files committed.", self.parquet_files as f64);
        e.gauge("corral_parquet_bytes", "Bytes of committed Parquet files.", self.parquet_bytes as f64);
        e.counter("corral_write_failures_total", "Writes refused by a WAL failure (e.g. disk full).", self.failed_writes as f64);
        e.counter("corral_backpressure_waits_total", "Writes that waited at the buffer ceiling.", self.backpressure_waits as f64);
        e.counter(
            "corral_backpressure_rejections_total",
            "Writes refused with 503 at the buffer ceiling.",
            self.rejected_overload as f64,
        );
        e.counter("corral_persists_total", "Snapshots of the buffer persisted to Parquet.", self.persists as f64);
        e.counter("corral_persist_seconds_total", "Time spent persisting.", self.persist_seconds);
        e.counter("corral_persist_failures_total", "Persist attempts that failed (retried).", self.persist_failures as f64);
        self.render_wal(&mut e);
    }

    /// The per-table ingest counters: one family each, its help and type even with no table yet.
    fn render_tables(&self, e: &mut Exposition) {
        let families: [TableFamily; 3] = [
            ("corral_ingest_rows_total", "Rows made durable, by table.", |c| c.rows),
            ("corral_ingest_points_total", "Field values (points) made durable, by table.", |c| c.values),
            ("corral_ingest_bytes_total", "Encoded WAL bytes written, by table.", |c| c.bytes),
        ];
        for (name, help, value) in families {
            let mut family = e.family(name, help, "counter");
            for (table, c) in &self.tables {
                family.sample(&[("table", table.as_str())], value(c) as f64);
            }
        }
    }

    fn render_wal(&self, e: &mut Exposition) {
        let w = &self.wal;
        e.counter("corral_wal_appends_total", "WAL records appended.", w.appends as f64);
        e.counter("corral_wal_bytes_total", "WAL bytes written.", w.bytes_written as f64);
        e.counter("corral_wal_fsyncs_total", "WAL fsyncs (each covers a group of appends).", w.fsyncs as f64);
        e.counter("corral_wal_write_errors_total", "WAL write or fsync errors.", w.write_errors as f64);
        e.gauge("corral_wal_segments", "WAL segment files on disk.", w.segments_on_disk as f64);
        let mut fsync = e.family("corral_wal_fsync_seconds", "WAL fsync latency.", "histogram");
        for (le, count) in &w.fsync_seconds_buckets {
            let le = if le.is_infinite() { "+Inf".to_string() } else { le.to_string() };
            fsync.sample_suffixed("_bucket", &[("le", &le)], count);
        }
        fsync.sample_suffixed("_sum", &[], w.fsync_seconds_sum).sample_suffixed("_count", &[], w.fsync_seconds_count);
    }
}
