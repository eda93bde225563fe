//! Counters for `/metrics`: per rule (rows evaluated, matches, evaluation time), alarms raised
//! and cleared, and the outbox (depth, deliveries, failures, dead letters, delivery latency).

use corral_services::metrics::{Exposition, seconds};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// One rule's counters, shared between the engine (which counts) and `/metrics` (which reads).
#[derive(Debug, Default)]
pub struct RuleCounters {
    pub evaluated_rows: AtomicU64,
    pub matched_rows: AtomicU64,
    pub eval_ns: AtomicU64,
}

/// A per-rule metric family: name, help, and how to read its value from a rule's counters.
type RuleFamily = (&'static str, &'static str, fn(&RuleCounters) -> String);

/// Upper bounds (seconds) of the delivery-latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Debug, Default)]
pub struct Metrics {
    rules: Mutex<BTreeMap<i64, (String, std::sync::Arc<RuleCounters>)>>,
    pub alarms_raised: AtomicU64,
    pub alarms_cleared: AtomicU64,
    pub alarms_open: AtomicI64,
    pub outbox_pending: AtomicI64,
    /// Per action kind: delivered, failed attempts, dead-lettered.
    kinds: Mutex<BTreeMap<&'static str, [u64; 3]>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Observations that waited because the rules task was behind (backpressure on ingest).
    pub ingest_waits: AtomicU64,
    /// Evaluation passes and the rows they took: rows per pass shows how well work is batched.
    pub passes: AtomicU64,
    pub pass_rows: AtomicU64,
}

impl Metrics {
    pub fn rule(&self, id: i64, name: &str) -> std::sync::Arc<RuleCounters> {
        let mut rules = self.rules.lock().expect("metrics lock");
        let entry = rules.entry(id).or_insert_with(|| (name.to_string(), Default::default()));
        entry.0 = name.to_string();
        entry.1.clone()
    }

    pub fn forget_rule(&self, id: i64) {
        self.rules.lock().expect("metrics lock").remove(&id);
    }

    pub fn delivered(&self, kind: &'static str, latency_s: f64) {
        self.kinds.lock().expect("metrics lock").entry(kind).or_default()[0] += 1;
        self.outbox_pending.fetch_sub(1, Relaxed);
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
            self.outbox_pending.fetch_sub(1, Relaxed);
        }
    }

    pub fn render_prometheus(&self, out: &mut String) {
        let mut e = Exposition::new(out);
        self.render_rules(&mut e);
        e.counter("corral_alarms_raised_total", "Alarms raised.", self.alarms_raised.load(Relaxed));
        e.counter(
            "corral_alarms_cleared_total",
            "Alarms cleared (by their rule or by people).",
            self.alarms_cleared.load(Relaxed),
        );
        e.gauge("corral_alarms_open", "Alarms not cleared.", self.alarms_open.load(Relaxed));
        e.gauge(
            "corral_outbox_pending",
            "Actions waiting for delivery (including retries).",
            self.outbox_pending.load(Relaxed).max(0),
        );
        e.counter(
            "corral_rules_ingest_waits_total",
            "Times ingest waited because rule evaluation was behind.",
            self.ingest_waits.load(Relaxed),
        );
        e.counter(
            "corral_rules_passes_total",
            "Evaluation passes (each evaluates every rule once per table).",
            self.passes.load(Relaxed),
        );
        e.counter("corral_rules_pass_rows_total", "Rows taken by evaluation passes.", self.pass_rows.load(Relaxed));
        self.render_outbox(&mut e);
        self.render_latency(&mut e);
    }

    fn render_rules(&self, e: &mut Exposition) {
        let families: [RuleFamily; 3] = [
            ("corral_rule_evaluated_rows_total", "Rows a rule's condition was evaluated on.", |c| {
                c.evaluated_rows.load(Relaxed).to_string()
            }),
            ("corral_rule_matched_rows_total", "Rows on which a rule's condition was true.", |c| {
                c.matched_rows.load(Relaxed).to_string()
            }),
            ("corral_rule_eval_seconds_total", "Time spent evaluating a rule.", |c| seconds(c.eval_ns.load(Relaxed))),
        ];
        let rules = self.rules.lock().expect("metrics lock");
        for (name, help, value) in families {
            let mut family = e.family(name, help, "counter");
            for (id, (rule, c)) in rules.iter() {
                family.sample(&[("rule_id", &id.to_string()), ("rule", rule)], value(c));
            }
        }
    }

    fn render_outbox(&self, e: &mut Exposition) {
        let kinds = self.kinds.lock().expect("metrics lock");
        for (i, (name, help)) in [
            ("corral_outbox_delivered_total", "Actions delivered."),
            ("corral_outbox_failed_attempts_total", "Delivery attempts that failed."),
            ("corral_outbox_dead_total", "Actions given up on (dead letters)."),
        ]
        .into_iter()
        .enumerate()
        {
            let mut family = e.family(name, help, "counter");
            for (kind, c) in kinds.iter() {
                family.sample(&[("action", kind)], c[i]);
            }
        }
    }

    fn render_latency(&self, e: &mut Exposition) {
        let mut family = e.family("corral_outbox_delivery_seconds", "From the alarm event to its delivery.", "histogram");
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
