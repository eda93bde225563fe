//! The outbox's counters: depth (pending entries), deliveries, failed attempts and dead letters
//! per kind of target, and a delivery-latency histogram. The host names the families
//! ([`MetricNames`]): the names are part of its documented `/metrics`, not of this crate.

use corral_services::metrics::Exposition;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// A metric family's name and its HELP text.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
}

/// How a host's `/metrics` shows its outbox.
#[derive(Debug, Clone, Copy)]
pub struct MetricNames {
    /// Gauge: entries waiting for delivery, retries included.
    pub pending: Family,
    /// Counters per kind of target.
    pub delivered: Family,
    pub failed_attempts: Family,
    pub dead: Family,
    /// Histogram: from enqueueing to delivery, seconds.
    pub delivery_seconds: Family,
    /// The label that carries [`crate::Deliver::kind`] on the per-kind counters.
    pub kind_label: &'static str,
}

/// Upper bounds (seconds) of the delivery-latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// Counted by the delivery loop, enqueue and retry; read by `/metrics`. Lives in the
/// [`crate::Outbox`].
#[derive(Debug)]
pub(crate) struct Metrics {
    names: &'static MetricNames,
    /// Entries pending: read from the table at open, then kept by counting (enqueued + revived
    /// − delivered − dead), so `/metrics` never queries the database.
    pub pending: AtomicI64,
    /// Per target kind: delivered, failed attempts, dead-lettered.
    kinds: Mutex<BTreeMap<&'static str, [u64; 3]>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    pub fn new(names: &'static MetricNames, pending: i64) -> Self {
        Metrics {
            names,
            pending: AtomicI64::new(pending),
            kinds: Mutex::default(),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
        }
    }

    pub fn delivered(&self, kind: &'static str, latency_s: f64) {
        self.kinds.lock().expect("metrics lock").entry(kind).or_default()[0] += 1;
        self.pending.fetch_sub(1, Relaxed);
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if latency_s <= *bound {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add((latency_s * 1e6) as u64, Relaxed);
    }

    pub fn failed(&self, kind: &'static str, dead: bool) {
        let mut kinds = self.kinds.lock().expect("metrics lock");
        let c = kinds.entry(kind).or_default();
        c[1] += 1;
        if dead {
            c[2] += 1;
            self.pending.fetch_sub(1, Relaxed);
        }
    }

    pub fn render_pending(&self, e: &mut Exposition) {
        let Family { name, help } = self.names.pending;
        e.gauge(name, help, self.pending.load(Relaxed).max(0));
    }

    pub fn render_deliveries(&self, e: &mut Exposition) {
        let n = self.names;
        let kinds = self.kinds.lock().expect("metrics lock");
        for (i, Family { name, help }) in [n.delivered, n.failed_attempts, n.dead].into_iter().enumerate() {
            let mut family = e.family(name, help, "counter");
            for (kind, c) in kinds.iter() {
                family.sample(&[(n.kind_label, kind)], c[i]);
            }
        }
        drop(kinds);
        let mut family = e.family(n.delivery_seconds.name, n.delivery_seconds.help, "histogram");
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            family.sample_suffixed("_bucket", &[("le", &bound.to_string())], bucket.load(Relaxed));
        }
        // One read, so the +Inf bucket and the count agree.
        let count = self.latency_count.load(Relaxed);
        // The sum is kept in microseconds; written to the microsecond like every `_seconds` metric.
        let sum = format!("{:.6}", self.latency_sum_us.load(Relaxed) as f64 / 1e6);
        family.sample_suffixed("_bucket", &[("le", "+Inf")], count);
        family.sample_suffixed("_sum", &[], sum).sample_suffixed("_count", &[], count);
    }
}
