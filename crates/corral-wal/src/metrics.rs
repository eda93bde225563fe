//! Counters the writer bumps and `/metrics` reads. Plain relaxed atomics: each counter is
//! monotonic on its own and a scrape does not need a consistent cut across them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the fsync latency histogram; `+Inf` is implicit.
pub(crate) const FSYNC_BOUNDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A point-in-time copy of the log's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct WalMetricsSnapshot {
    /// Records acknowledged as durable.
    pub appends: u64,
    /// Bytes written into segment files (framed records and segment headers).
    pub bytes_written: u64,
    /// `sync_data` calls on segment files (group commits and new-segment headers).
    pub fsyncs: u64,
    /// Failed group writes or fsyncs (each failed group counts once).
    pub write_errors: u64,
    /// Prometheus-style cumulative histogram of fsync latency: (upper bound seconds, count) for bounds
    /// 0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5, then +Inf as f64::INFINITY.
    pub fsync_seconds_buckets: Vec<(f64, u64)>,
    pub fsync_seconds_sum: f64,
    pub fsync_seconds_count: u64,
    /// Segment files currently in the directory, the active one included.
    pub segments_on_disk: u64,
}

#[derive(Default)]
pub(crate) struct Metrics {
    appends: AtomicU64,
    bytes_written: AtomicU64,
    fsyncs: AtomicU64,
    write_errors: AtomicU64,
    /// Per-bucket (not cumulative) counts; the last slot is +Inf. Cumulated on snapshot so the
    /// hot path does one increment instead of up to thirteen.
    fsync_buckets: [AtomicU64; FSYNC_BOUNDS.len() + 1],
    /// Nanoseconds, so the sum can be an atomic add instead of a float CAS loop.
    fsync_nanos: AtomicU64,
    segments_on_disk: AtomicU64,
}

impl Metrics {
    pub fn add_appends(&self, n: u64) {
        self.appends.fetch_add(n, Relaxed);
    }

    pub fn add_bytes_written(&self, n: u64) {
        self.bytes_written.fetch_add(n, Relaxed);
    }

    pub fn add_write_error(&self) {
        self.write_errors.fetch_add(1, Relaxed);
    }

    pub fn observe_fsync(&self, took: Duration) {
        self.fsyncs.fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        let bucket = FSYNC_BOUNDS.iter().position(|&bound| secs <= bound).unwrap_or(FSYNC_BOUNDS.len());
        self.fsync_buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.fsync_nanos.fetch_add(nanos, Relaxed);
    }

    pub fn set_segments(&self, n: u64) {
        self.segments_on_disk.store(n, Relaxed);
    }

    pub fn segment_created(&self) {
        self.segments_on_disk.fetch_add(1, Relaxed);
    }

    pub fn segments_removed(&self, n: u64) {
        // Saturating: a stray count mismatch (a file removed by hand) must not wrap to 2^64.
        let _ = self.segments_on_disk.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }

    pub fn snapshot(&self) -> WalMetricsSnapshot {
        let mut cumulative = 0;
        let fsync_seconds_buckets = FSYNC_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.fsync_buckets)
            .map(|(bound, count)| {
                cumulative += count.load(Relaxed);
                (bound, cumulative)
            })
            .collect();
        WalMetricsSnapshot {
            appends: self.appends.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            fsyncs: self.fsyncs.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            fsync_seconds_buckets,
            fsync_seconds_sum: Duration::from_nanos(self.fsync_nanos.load(Relaxed)).as_secs_f64(),
            // The +Inf bucket is the count, by definition; reading it from there keeps the
            // snapshot's count and buckets in agreement even while the writer is observing.
            fsync_seconds_count: cumulative,
            segments_on_disk: self.segments_on_disk.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_inf_last() {
        let m = Metrics::default();
        m.observe_fsync(Duration::from_micros(100));
        m.observe_fsync(Duration::from_millis(3));
        m.observe_fsync(Duration::from_secs(10));
        let s = m.snapshot();
        assert_eq!(s.fsyncs, 3);
        assert_eq!(s.fsync_seconds_count, 3);
        assert_eq!(s.fsync_seconds_buckets.len(), 13);
        assert_eq!(s.fsync_seconds_buckets[0], (0.0005, 1));
        assert_eq!(s.fsync_seconds_buckets[3], (0.005, 2));
        assert_eq!(s.fsync_seconds_buckets[11], (2.5, 2));
        assert_eq!(s.fsync_seconds_buckets[12], (f64::INFINITY, 3));
        assert!((s.fsync_seconds_sum - 10.0031).abs() < 1e-9);
    }
}
