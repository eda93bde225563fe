//! Counters for `/metrics`: per rule (rows evaluated, matches, evaluation time), alarms raised
//! and cleared, evaluation passes. The outbox counts its own (depth, deliveries, failures, dead
//! letters, delivery latency) under the names in `outbox.rs`; they are written among these, in
//! the order `/metrics` has always shown them.

use corral_outbox::Outbox;
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

#[derive(Debug, Default)]
pub struct Metrics {
    rules: Mutex<BTreeMap<i64, (String, std::sync::Arc<RuleCounters>)>>,
    pub alarms_raised: AtomicU64,
    pub alarms_cleared: AtomicU64,
    pub alarms_open: AtomicI64,
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

    /// Everything the rules room shows, `outbox`'s families included, in one stable order.
    pub fn render_prometheus(&self, out: &mut String, outbox: &Outbox) {
        let mut e = Exposition::new(out);
        self.render_rules(&mut e);
        e.counter("corral_alarms_raised_total", "Alarms raised.", self.alarms_raised.load(Relaxed));
        e.counter(
            "corral_alarms_cleared_total",
            "Alarms cleared (by their rule or by people).",
            self.alarms_cleared.load(Relaxed),
        );
        e.gauge("corral_alarms_open", "Alarms not cleared.", self.alarms_open.load(Relaxed));
        outbox.render_pending(&mut e);
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
        outbox.render_deliveries(&mut e);
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
}
