//! Counters for `/metrics`: per rule (rows evaluated, matches, evaluation time), alarms raised
//! and cleared, and the outbox (depth, deliveries, failures, dead letters, delivery latency).

use std::collections::BTreeMap;
use std::fmt::Write;
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
        let rules = self.rules.lock().expect("metrics lock");
        let families: [RuleFamily; 3] = [
            ("corral_rule_evaluated_rows_total", "Rows a rule's condition was evaluated on.", |c| {
                c.evaluated_rows.load(Relaxed).to_string()
            }),
            ("corral_rule_matched_rows_total", "Rows on which a rule's condition was true.", |c| {
                c.matched_rows.load(Relaxed).to_string()
            }),
            ("corral_rule_eval_seconds_total", "Time spent evaluating a rule.", |c| {
                format!("{:.6}", c.eval_ns.load(Relaxed) as f64 / 1e9)
            }),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (id, (rule, c)) in rules.iter() {
                let _ = writeln!(out, "{name}{{rule_id=\"{id}\",rule=\"{}\"}} {}", escape(rule), value(c));
            }
        }
        drop(rules);
        let _ = writeln!(
            out,
            "# HELP corral_alarms_raised_total Alarms raised.\n# TYPE corral_alarms_raised_total counter\ncorral_alarms_raised_total {}\n\
             # HELP corral_alarms_cleared_total Alarms cleared (by their rule or by people).\n# TYPE corral_alarms_cleared_total counter\ncorral_alarms_cleared_total {}\n\
             # HELP corral_alarms_open Alarms not cleared.\n# TYPE corral_alarms_open gauge\ncorral_alarms_open {}\n\
             # HELP corral_outbox_pending Actions waiting for delivery (including retries).\n# TYPE corral_outbox_pending gauge\ncorral_outbox_pending {}\n\
             # HELP corral_rules_ingest_waits_total Times ingest waited because rule evaluation was behind.\n# TYPE corral_rules_ingest_waits_total counter\ncorral_rules_ingest_waits_total {}\n\
             # HELP corral_rules_passes_total Evaluation passes (each evaluates every rule once per table).\n# TYPE corral_rules_passes_total counter\ncorral_rules_passes_total {}\n\
             # HELP corral_rules_pass_rows_total Rows taken by evaluation passes.\n# TYPE corral_rules_pass_rows_total counter\ncorral_rules_pass_rows_total {}",
            self.alarms_raised.load(Relaxed),
            self.alarms_cleared.load(Relaxed),
            self.alarms_open.load(Relaxed),
            self.outbox_pending.load(Relaxed).max(0),
            self.ingest_waits.load(Relaxed),
            self.passes.load(Relaxed),
            self.pass_rows.load(Relaxed),
        );
        let kinds = self.kinds.lock().expect("metrics lock");
        for (i, (name, help)) in [
            ("corral_outbox_delivered_total", "Actions delivered."),
            ("corral_outbox_failed_attempts_total", "Delivery attempts that failed."),
            ("corral_outbox_dead_total", "Actions given up on (dead letters)."),
        ]
        .into_iter()
        .enumerate()
        {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (kind, c) in kinds.iter() {
                let _ = writeln!(out, "{name}{{action=\"{kind}\"}} {}", c[i]);
            }
        }
        drop(kinds);
        let name = "corral_outbox_delivery_seconds";
        let _ = writeln!(out, "# HELP {name} From the alarm event to its delivery.\n# TYPE {name} histogram");
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", self.latency_buckets[i].load(Relaxed));
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {:.6}\n{name}_count {count}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
