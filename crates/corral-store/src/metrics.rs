//! Counters the store keeps for `/metrics`. Plain atomics: the HTTP crate renders them.

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
    /// Appends Prometheus text-format lines.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let mut family = |name: &str, kind: &str, help: &str, samples: &mut dyn Iterator<Item = (String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per_table = |f: fn(&TableCountersSnapshot) -> u64| {
            self.tables.iter().map(move |(t, c)| (format!("{{table=\"{t}\"}}"), f(c) as f64)).collect::<Vec<_>>()
        };
        family("corral_ingest_rows_total", "counter", "Rows made durable, by table.", &mut per_table(|c| c.rows).into_iter());
        family(
            "corral_ingest_points_total",
            "counter",
            "Field values (points) made durable, by table.",
            &mut per_table(|c| c.values).into_iter(),
        );
        family(
            "corral_ingest_bytes_total",
            "counter",
            "Encoded WAL bytes written, by table.",
            &mut per_table(|c| c.bytes).into_iter(),
        );
        let one = |v: f64| std::iter::once((String::new(), v));
        family(
            "corral_write_buffer_bytes",
            "gauge",
            "Estimated bytes of unpersisted rows in memory.",
            &mut one(self.buffer_bytes as f64),
        );
        family("corral_parquet_files", "gauge", "Parquet files committed.", &mut one(self.parquet_files as f64));
        family("corral_parquet_bytes", "gauge", "Bytes of committed Parquet files.", &mut one(self.parquet_bytes as f64));
        family(
            "corral_write_failures_total",
            "counter",
            "Writes refused by a WAL failure (e.g. disk full).",
            &mut one(self.failed_writes as f64),
        );
        family(
            "corral_backpressure_waits_total",
            "counter",
            "Writes that waited at the buffer ceiling.",
            &mut one(self.backpressure_waits as f64),
        );
        family(
            "corral_backpressure_rejections_total",
            "counter",
            "Writes refused with 503 at the buffer ceiling.",
            &mut one(self.rejected_overload as f64),
        );
        family(
            "corral_persists_total",
            "counter",
            "Snapshots of the buffer persisted to Parquet.",
            &mut one(self.persists as f64),
        );
        family("corral_persist_seconds_total", "counter", "Time spent persisting.", &mut one(self.persist_seconds));
        family(
            "corral_persist_failures_total",
            "counter",
            "Persist attempts that failed (retried).",
            &mut one(self.persist_failures as f64),
        );
        let w = &self.wal;
        family("corral_wal_appends_total", "counter", "WAL records appended.", &mut one(w.appends as f64));
        family("corral_wal_bytes_total", "counter", "WAL bytes written.", &mut one(w.bytes_written as f64));
        family("corral_wal_fsyncs_total", "counter", "WAL fsyncs (each covers a group of appends).", &mut one(w.fsyncs as f64));
        family("corral_wal_write_errors_total", "counter", "WAL write or fsync errors.", &mut one(w.write_errors as f64));
        family("corral_wal_segments", "gauge", "WAL segment files on disk.", &mut one(w.segments_on_disk as f64));
        let _ = writeln!(out, "# HELP corral_wal_fsync_seconds WAL fsync latency.\n# TYPE corral_wal_fsync_seconds histogram");
        for (le, count) in &w.fsync_seconds_buckets {
            let le = if le.is_infinite() { "+Inf".to_string() } else { le.to_string() };
            let _ = writeln!(out, "corral_wal_fsync_seconds_bucket{{le=\"{le}\"}} {count}");
        }
        let _ = writeln!(out, "corral_wal_fsync_seconds_sum {}", w.fsync_seconds_sum);
        let _ = writeln!(out, "corral_wal_fsync_seconds_count {}", w.fsync_seconds_count);
    }
}
