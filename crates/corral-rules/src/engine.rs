//! The evaluator: compiled rules and their per-device state. It sees durable rows a table at a
//! time, evaluates each rule's condition on the whole batch at once (one Arrow kernel pass per
//! rule), then walks only the rows that matter through the rule's state machine:
//!
//! ```text
//!   idle ──condition true──► pending (since t) ──held `for`──► raised ──clear true──► idle
//!     ▲                        │ condition false                 │ condition true: repeat
//!     └────────────────────────┘                                 ▼
//! ```
//! Time is the rows' own timestamps, so `for 5m` and windows are testable with injected times.

use crate::alarm::Transition;
use crate::condition::{Condition, Input};
use crate::metrics::{Metrics, RuleCounters};
use crate::spec::RuleSpec;
use crate::window::{WindowSpec, WindowState, parse_duration_ns};
use arrow::array::ArrayRef;
use columns::Columns;
use corral_model::{FieldValue, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// What the engine needs to know about a device: where it belongs, its attributes, and when it
/// was last heard from (for absence rules after a restart).
pub use corral_services::DeviceFacts;

/// Where one (rule, device) stands in the state machine. Only devices with something pending or
/// raised have one, so a false condition for a quiet device costs no state at all.
#[derive(Debug, Default)]
struct Machine {
    /// The condition has been true since this row time (waiting out `for`).
    true_since: Option<i64>,
    /// The alarm for this device was raised and has not been cleared by the rule.
    raised: bool,
}

impl Machine {
    fn idle(&self) -> bool {
        self.true_since.is_none() && !self.raised
    }
}

type ByDevice<T> = HashMap<u32, T, foldhash::fast::RandomState>;

/// A rule ready to evaluate, with the state of every device it has seen (keyed by the engine's
/// device numbers).
pub struct ActiveRule {
    pub id: i64,
    pub spec: RuleSpec,
    condition: Option<Condition>,
    clear: Option<Condition>,
    hold_ns: i64,
    absence_ns: Option<i64>,
    machines: ByDevice<Machine>,
    counters: Arc<RuleCounters>,
}

impl ActiveRule {
    pub fn new(id: i64, spec: RuleSpec, metrics: &Metrics) -> Result<ActiveRule, String> {
        let condition = spec.condition.as_deref().map(Condition::parse).transpose().map_err(|e| format!("condition: {e}"))?;
        let clear = spec.clear.as_deref().map(Condition::parse).transpose().map_err(|e| format!("clear: {e}"))?;
        let hold_ns = spec.hold.as_deref().map(parse_duration_ns).transpose()?.unwrap_or(0);
        let absence_ns = spec.absence.as_deref().map(parse_duration_ns).transpose()?;
        let counters = metrics.rule(id, &spec.name);
        Ok(ActiveRule { id, spec, condition, clear, hold_ns, absence_ns, machines: Default::default(), counters })
    }

    fn in_scope(&self, facts: &DeviceFacts) -> bool {
        self.spec.covers(facts)
    }
}

/// The alarm a rule raises for a device.
fn raise(id: i64, spec: &RuleSpec, facts: &DeviceFacts, at_ns: i64, values: serde_json::Value) -> Transition {
    let message = match &spec.message {
        Some(m) => m.replace("{device}", &facts.id),
        None => match (&spec.condition, &spec.absence) {
            (Some(c), _) => format!("{}: {c}", spec.name),
            (None, Some(a)) => format!("{}: no data for {a}", spec.name),
            (None, None) => spec.name.clone(),
        },
    };
    Transition::Raise {
        rule_id: id,
        rule: spec.name.clone(),
        severity: spec.severity,
        message,
        tenant: facts.tenant.clone(),
        device: facts.id.clone(),
        at_ns,
        values,
    }
}

/// A row as the alarm's `last_values`.
fn row_values(row: &Row) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("time".into(), crate::alarm::format_ns(row.time_ns).into());
    for (k, v) in &row.tags {
        map.insert(k.clone(), v.clone().into());
    }
    for (k, v) in &row.fields {
        let v = match v {
            FieldValue::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
            FieldValue::Int(i) => (*i).into(),
            FieldValue::UInt(u) => (*u).into(),
            FieldValue::Bool(b) => (*b).into(),
            FieldValue::Str(s) => s.clone().into(),
        };
        map.insert(k.clone(), v);
    }
    serde_json::Value::Object(map)
}

/// Devices by number. Rules key their per-device state by these small integers, so a pass hashes
/// each device's name once, not once per rule and row.
#[derive(Default)]
struct Devices(HashMap<String, u32, foldhash::fast::RandomState>);

impl Devices {
    fn number(&mut self, id: &str) -> u32 {
        if let Some(&n) = self.0.get(id) {
            return n;
        }
        let n = u32::try_from(self.0.len()).expect("fewer than 4 billion devices");
        self.0.insert(id.to_string(), n);
        n
    }
}

/// A window of one table: its state per device is shared by every rule that uses it (in the
/// condition or the clear condition), so a hundred rules over `avg(temperature) over 10m` advance
/// one window per message, and a new rule starts with the history already there.
type WindowKey = (String, WindowSpec);

/// Every active rule. Owned by the rules task; changed when rules are created, edited or removed.
#[derive(Default)]
pub struct Engine {
    pub rules: Vec<ActiveRule>,
    devices: Devices,
    windows: HashMap<WindowKey, ByDevice<WindowState>>,
}

impl Engine {
    pub fn upsert(&mut self, rule: ActiveRule) {
        match self.rules.iter_mut().find(|r| r.id == rule.id) {
            Some(slot) => *slot = rule,
            None => self.rules.push(rule),
        }
        self.prune_windows();
    }

    pub fn remove(&mut self, id: i64) {
        self.rules.retain(|r| r.id != id);
        self.prune_windows();
    }

    /// Drops the state of windows no rule uses any more.
    fn prune_windows(&mut self) {
        let used: std::collections::HashSet<WindowKey> = self.rules.iter().flat_map(window_keys).collect();
        self.windows.retain(|key, _| used.contains(key));
    }

    /// Marks an alarm that is open in the book (after a restart or an edit) so the rule repeats
    /// and clears it instead of raising a second one.
    pub fn mark_raised(&mut self, rule_id: i64, device: &str) {
        let number = self.devices.number(device);
        if let Some(rule) = self.rules.iter_mut().find(|r| r.id == rule_id) {
            rule.machines.entry(number).or_default().raised = true;
        }
    }

    pub fn enabled(&self) -> usize {
        self.rules.iter().filter(|r| r.spec.enabled).count()
    }

    /// Every enabled absence rule with its duration.
    pub fn absence_windows(&self) -> Vec<(RuleSpec, i64)> {
        self.rules.iter().filter(|r| r.spec.enabled).filter_map(|r| Some((r.spec.clone(), r.absence_ns?))).collect()
    }

    pub fn wants_clock(&self) -> bool {
        self.rules.iter().any(|r| r.spec.enabled && r.absence_ns.is_some())
    }

    /// Evaluates every rule on `table`'s rows (in arrival order) and returns what changed.
    pub fn evaluate(&mut self, table: &str, rows: &[Row], facts: &HashMap<String, Arc<DeviceFacts>>) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut columns = Columns::new(rows, facts, &mut self.devices);
        self.advance_windows(table, &mut columns);
        for rule in self.rules.iter_mut().filter(|r| r.spec.enabled) {
            let started = Instant::now();
            if rule.absence_ns.is_some() {
                clear_absences(rule, &columns, &mut out);
            } else if rule.spec.table == table {
                evaluate_condition(rule, &mut columns, &mut out);
            }
            rule.counters.eval_ns.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        out
    }

    /// Advances every window the enabled rules of `table` use, over the rows of the devices in
    /// scope of at least one of those rules, and leaves each window's column in `columns`.
    fn advance_windows(&mut self, table: &str, columns: &mut Columns) {
        let mut needed: HashMap<WindowSpec, Vec<bool>> = HashMap::new();
        for rule in self.rules.iter().filter(|r| r.spec.enabled && r.spec.table == table) {
            let specs: Vec<&WindowSpec> = rule.condition.iter().chain(&rule.clear).flat_map(|c| &c.windows).collect();
            if specs.is_empty() {
                continue;
            }
            let Some(scoped) = columns.in_scope(rule) else { continue };
            for spec in specs {
                let union = needed.entry(spec.clone()).or_insert_with(|| vec![false; scoped.len()]);
                union.iter_mut().zip(&scoped).for_each(|(u, s)| *u |= *s);
            }
        }
        for (spec, scoped) in needed {
            let states = self.windows.entry((table.to_string(), spec.clone())).or_default();
            let numbers = columns.numbers(&spec.field);
            let mut values: Vec<Option<f64>> = vec![None; columns.rows.len()];
            for (group, _) in columns.groups.iter().zip(&scoped).filter(|(_, s)| **s) {
                let state = states.entry(group.number).or_insert_with(|| WindowState::new(&spec));
                for &i in &group.rows {
                    values[i] = state.push(&spec, columns.rows[i].time_ns, numbers[i]);
                }
            }
            columns.windows.insert(spec, Arc::new(arrow::array::Float64Array::from(values)));
        }
    }

    /// Raises absence alarms for devices in scope not heard from for the rule's duration.
    /// `last_heard` holds what this process saw; `facts.last_seen_ns` covers the time before.
    pub fn check_absence(
        &mut self,
        now_ns: i64,
        devices: &[Arc<DeviceFacts>],
        last_heard: &HashMap<String, i64>,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        for rule in self.rules.iter_mut().filter(|r| r.spec.enabled) {
            let Some(absence) = rule.absence_ns else { continue };
            for facts in devices {
                if !rule.in_scope(facts) {
                    continue;
                }
                let heard = last_heard.get(&facts.id).copied().max(facts.last_seen_ns);
                // A device never heard from is not "silent", it was never connected.
                let Some(heard) = heard else { continue };
                if now_ns - heard < absence {
                    continue;
                }
                let state = rule.machines.entry(self.devices.number(&facts.id)).or_default();
                if !state.raised {
                    state.raised = true;
                    let values = serde_json::json!({"last_seen": crate::alarm::format_ns(heard)});
                    out.push(raise(rule.id, &rule.spec, facts, now_ns, values));
                }
            }
        }
        out
    }
}

/// Data from a device clears its absence alarm.
fn clear_absences(rule: &mut ActiveRule, columns: &Columns, out: &mut Vec<Transition>) {
    if rule.machines.is_empty() {
        return;
    }
    for group in &columns.groups {
        if group.facts.is_some_and(|f| rule.in_scope(f)) && rule.machines.remove(&group.number).is_some_and(|m| m.raised) {
            let first = &columns.rows[group.rows[0]];
            out.push(Transition::Clear { rule_id: rule.id, device: first.device.clone(), at_ns: first.time_ns });
        }
    }
}

fn evaluate_condition(rule: &mut ActiveRule, columns: &mut Columns, out: &mut Vec<Transition>) {
    use std::sync::atomic::Ordering::Relaxed;
    let rows = columns.rows;
    let Some(scoped) = columns.in_scope(rule) else { return };
    let in_scope = || columns.groups.iter().zip(&scoped).filter(|(_, s)| **s).map(|(g, _)| g);
    rule.counters.evaluated_rows.fetch_add(in_scope().map(|g| g.rows.len() as u64).sum(), Relaxed);
    let Some(condition) = rule.condition.as_mut() else { return };
    let matched = match inputs(condition, columns).and_then(|c| condition.evaluate(c, rows.len())) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(rule = rule.id, name = %rule.spec.name, error = %e, "rule condition failed on this batch; skipped");
            return;
        }
    };
    let cleared = match rule.clear.as_mut() {
        None => None,
        Some(clear) => match inputs(clear, columns).and_then(|c| clear.evaluate(c, rows.len())) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(rule = rule.id, error = %e, "rule clear condition failed on this batch; skipped");
                None
            }
        },
    };
    // Most rules are false on a whole batch while no device has anything pending: nothing to walk.
    if matched.true_count() == 0 && rule.machines.is_empty() {
        return;
    }
    let in_scope = || columns.groups.iter().zip(&scoped).filter(|(_, s)| **s).map(|(g, _)| g);
    let mut matched_rows = 0;
    for group in in_scope() {
        let trues = group.rows.iter().filter(|&&i| matched.value(i)).count();
        matched_rows += trues;
        // The common case, a false condition for a device with nothing pending, costs at most
        // one lookup, and none when no device has anything pending.
        let state = if trues > 0 {
            rule.machines.entry(group.number).or_default()
        } else {
            match rule.machines.get_mut(&group.number) {
                Some(state) => state,
                None => continue,
            }
        };
        for &i in &group.rows {
            let (row, is_true) = (&rows[i], matched.value(i));
            if !state.raised {
                if !is_true {
                    state.true_since = None;
                    continue;
                }
                let since = *state.true_since.get_or_insert(row.time_ns);
                if row.time_ns - since >= rule.hold_ns {
                    state.raised = true;
                    state.true_since = None;
                    let facts = group.facts.expect("in scope");
                    out.push(raise(rule.id, &rule.spec, facts, row.time_ns, row_values(row)));
                }
                continue;
            }
            let clears = match &cleared {
                Some(c) => c.value(i),
                None => !is_true,
            };
            if clears {
                state.raised = false;
                out.push(Transition::Clear { rule_id: rule.id, device: row.device.clone(), at_ns: row.time_ns });
            } else if is_true {
                out.push(Transition::Repeat {
                    rule_id: rule.id,
                    device: row.device.clone(),
                    at_ns: row.time_ns,
                    values: row_values(row),
                });
            }
        }
        if state.idle() {
            rule.machines.remove(&group.number);
        }
    }
    rule.counters.matched_rows.fetch_add(matched_rows as u64, Relaxed);
}

/// The windows a rule reads, keyed by its table.
fn window_keys(rule: &ActiveRule) -> impl Iterator<Item = WindowKey> + '_ {
    rule.condition.iter().chain(&rule.clear).flat_map(|c| &c.windows).map(|w| (rule.spec.table.clone(), w.clone()))
}

/// The columns a condition reads, in the order of its inputs.
fn inputs(condition: &Condition, columns: &mut Columns) -> Result<Vec<ArrayRef>, String> {
    let mut out = Vec::with_capacity(condition.inputs.len());
    for input in &condition.inputs {
        out.push(match input {
            Input::Field(name) => columns.field(name),
            Input::Attribute(name) => columns.attribute(name),
            Input::Window(w) => {
                let spec = &condition.windows[*w];
                columns.windows.get(spec).cloned().ok_or_else(|| format!("window {spec:?} was not advanced"))?
            }
        });
    }
    Ok(out)
}

mod columns;
#[cfg(test)]
mod tests;
