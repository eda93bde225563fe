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
use crate::spec::{RuleSpec, Scope};
use crate::window::{WindowState, parse_duration_ns};
use arrow::array::{ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, NullArray, StringBuilder, TimestampNanosecondBuilder, UInt64Builder};
use corral_model::{FieldValue, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// What the engine needs to know about a device: where it belongs and its attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFacts {
    pub id: String,
    pub tenant: String,
    pub profile: Option<String>,
    pub site: Option<String>,
    pub tags: Vec<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// When the platform last heard from it (for absence rules after a restart).
    pub last_seen_ns: Option<i64>,
}

/// Where one (rule, device) stands.
#[derive(Debug, Default)]
struct DeviceState {
    windows: Vec<WindowState>,
    clear_windows: Vec<WindowState>,
    /// The condition has been true since this row time (waiting out `for`).
    true_since: Option<i64>,
    /// The alarm for this device was raised and has not been cleared by the rule.
    raised: bool,
}

/// A rule ready to evaluate, with the state of every device it has seen.
pub struct ActiveRule {
    pub id: i64,
    pub spec: RuleSpec,
    condition: Option<Condition>,
    clear: Option<Condition>,
    hold_ns: i64,
    absence_ns: Option<i64>,
    states: HashMap<String, DeviceState, foldhash::fast::RandomState>,
    counters: Arc<RuleCounters>,
}

impl ActiveRule {
    pub fn new(id: i64, spec: RuleSpec, metrics: &Metrics) -> Result<ActiveRule, String> {
        let condition = spec.condition.as_deref().map(Condition::parse).transpose().map_err(|e| format!("condition: {e}"))?;
        let clear = spec.clear.as_deref().map(Condition::parse).transpose().map_err(|e| format!("clear: {e}"))?;
        let hold_ns = spec.hold.as_deref().map(parse_duration_ns).transpose()?.unwrap_or(0);
        let absence_ns = spec.absence.as_deref().map(parse_duration_ns).transpose()?;
        let counters = metrics.rule(id, &spec.name);
        Ok(ActiveRule { id, spec, condition, clear, hold_ns, absence_ns, states: Default::default(), counters })
    }

    fn in_scope(&self, facts: &DeviceFacts) -> bool {
        let Scope { profile, site, tag, device } = &self.spec.scope;
        self.spec.tenant.as_ref().is_none_or(|t| *t == facts.tenant)
            && profile.as_ref().is_none_or(|p| facts.profile.as_ref() == Some(p))
            && site.as_ref().is_none_or(|s| facts.site.as_ref() == Some(s))
            && tag.as_ref().is_none_or(|t| facts.tags.contains(t))
            && device.as_ref().is_none_or(|d| *d == facts.id)
    }

    /// Marks an alarm that is open in the book (after a restart) so the rule repeats and clears
    /// it instead of raising a second one.
    pub fn mark_raised(&mut self, device: &str) {
        self.states.entry(device.to_string()).or_default().raised = true;
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

/// Columns of one table's rows, built on first use and shared by every rule in the pass.
struct Columns<'a> {
    rows: &'a [Row],
    facts: Vec<Option<&'a DeviceFacts>>,
    built: HashMap<Input, ArrayRef>,
}

impl<'a> Columns<'a> {
    fn field(&mut self, name: &str) -> ArrayRef {
        if let Some(c) = self.built.get(&Input::Field(name.to_string())) {
            return c.clone();
        }
        let rows = self.rows;
        let column: ArrayRef = match name {
            "time" => {
                let mut b = TimestampNanosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
                rows.iter().for_each(|r| b.append_value(r.time_ns));
                Arc::new(b.finish())
            }
            "device" => {
                let mut b = StringBuilder::new();
                rows.iter().for_each(|r| b.append_value(&r.device));
                Arc::new(b.finish())
            }
            _ => field_column(rows, name),
        };
        self.built.insert(Input::Field(name.to_string()), column.clone());
        column
    }

    fn attribute(&mut self, name: &str) -> ArrayRef {
        let key = Input::Attribute(name.to_string());
        if let Some(c) = self.built.get(&key) {
            return c.clone();
        }
        let values: Vec<Option<&serde_json::Value>> =
            self.facts.iter().map(|f| f.and_then(|f| f.attributes.get(name)).filter(|v| !v.is_null())).collect();
        let column: ArrayRef = if values.iter().flatten().all(|v| v.is_number()) {
            Arc::new(values.iter().map(|v| v.and_then(|v| v.as_f64())).collect::<arrow::array::Float64Array>())
        } else if values.iter().flatten().all(|v| v.is_boolean()) {
            Arc::new(values.iter().map(|v| v.and_then(|v| v.as_bool())).collect::<arrow::array::BooleanArray>())
        } else {
            let mut b = StringBuilder::new();
            for v in &values {
                b.append_option(v.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)));
            }
            Arc::new(b.finish())
        };
        self.built.insert(key, column.clone());
        column
    }
}

/// One message field as a column, typed by its first value; a row without the field is NULL.
fn field_column(rows: &[Row], name: &str) -> ArrayRef {
    let get = |r: &'_ Row| {
        r.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).or_else(|| {
            r.tags.iter().find(|(n, _)| n == name).map(|(_, v)| FieldValue::Str(v.clone()))
        })
    };
    let values: Vec<Option<FieldValue>> = rows.iter().map(get).collect();
    macro_rules! build {
        ($builder:ty, $variant:ident) => {{
            let mut b = <$builder>::with_capacity(rows.len());
            for v in &values {
                match v {
                    Some(FieldValue::$variant(x)) => b.append_value(x.clone()),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match values.iter().flatten().next() {
        None => Arc::new(NullArray::new(rows.len())),
        Some(FieldValue::Float(_)) => build!(Float64Builder, Float),
        Some(FieldValue::Int(_)) => build!(Int64Builder, Int),
        Some(FieldValue::UInt(_)) => build!(UInt64Builder, UInt),
        Some(FieldValue::Bool(_)) => build!(BooleanBuilder, Bool),
        Some(FieldValue::Str(_)) => {
            let mut b = StringBuilder::new();
            for v in &values {
                match v {
                    Some(FieldValue::Str(s)) => b.append_value(s),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
    }
}

fn numeric(v: &FieldValue) -> Option<f64> {
    match v {
        FieldValue::Float(f) => Some(*f),
        FieldValue::Int(i) => Some(*i as f64),
        FieldValue::UInt(u) => Some(*u as f64),
        FieldValue::Bool(b) => Some(f64::from(u8::from(*b))),
        FieldValue::Str(_) => None,
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

/// Every active rule. Owned by the rules task; changed when rules are created, edited or removed.
#[derive(Default)]
pub struct Engine {
    pub rules: Vec<ActiveRule>,
}

impl Engine {
    pub fn upsert(&mut self, rule: ActiveRule) {
        match self.rules.iter_mut().find(|r| r.id == rule.id) {
            Some(slot) => *slot = rule,
            None => self.rules.push(rule),
        }
    }

    pub fn remove(&mut self, id: i64) {
        self.rules.retain(|r| r.id != id);
    }

    pub fn enabled(&self) -> usize {
        self.rules.iter().filter(|r| r.spec.enabled).count()
    }

    pub fn wants_clock(&self) -> bool {
        self.rules.iter().any(|r| r.spec.enabled && r.absence_ns.is_some())
    }

    /// Evaluates every rule on `table`'s rows (in arrival order) and returns what changed.
    pub fn evaluate(&mut self, table: &str, rows: &[Row], facts: &HashMap<String, Arc<DeviceFacts>>) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut columns = Columns { rows, facts: rows.iter().map(|r| facts.get(&r.device).map(|f| &**f)).collect(), built: HashMap::new() };
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

    /// Raises absence alarms for devices in scope not heard from for the rule's duration.
    /// `last_heard` holds what this process saw; `facts.last_seen_ns` covers the time before.
    pub fn check_absence(&mut self, now_ns: i64, devices: &[Arc<DeviceFacts>], last_heard: &HashMap<String, i64>) -> Vec<Transition> {
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
                let state = rule.states.entry(facts.id.clone()).or_default();
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
    for (row, facts) in columns.rows.iter().zip(&columns.facts) {
        if facts.is_some_and(|f| rule.in_scope(f))
            && let Some(state) = rule.states.get_mut(&row.device)
            && state.raised
        {
            state.raised = false;
            out.push(Transition::Clear { rule_id: rule.id, device: row.device.clone(), at_ns: row.time_ns });
        }
    }
}

fn evaluate_condition(rule: &mut ActiveRule, columns: &mut Columns, out: &mut Vec<Transition>) {
    use std::sync::atomic::Ordering::Relaxed;
    let rows = columns.rows;
    let in_scope: Vec<bool> = columns.facts.iter().map(|f| f.is_some_and(|f| rule.in_scope(f))).collect();
    let scoped = in_scope.iter().filter(|s| **s).count();
    if scoped == 0 {
        return;
    }
    rule.counters.evaluated_rows.fetch_add(scoped as u64, Relaxed);
    let Some(condition) = rule.condition.as_mut() else { return };
    let matched = match inputs(condition, &mut rule.states, false, columns, &in_scope).and_then(|c| condition.evaluate(c, rows.len())) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(rule = rule.id, name = %rule.spec.name, error = %e, "rule condition failed on this batch; skipped");
            return;
        }
    };
    let cleared = match rule.clear.as_mut() {
        None => None,
        Some(clear) => match inputs(clear, &mut rule.states, true, columns, &in_scope).and_then(|c| clear.evaluate(c, rows.len())) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(rule = rule.id, error = %e, "rule clear condition failed on this batch; skipped");
                None
            }
        },
    };
    let matched_in_scope = (0..rows.len()).filter(|&i| in_scope[i] && matched.value(i)).count();
    rule.counters.matched_rows.fetch_add(matched_in_scope as u64, Relaxed);
    let windowed = !condition.windows.is_empty();
    for (i, row) in rows.iter().enumerate() {
        if !in_scope[i] {
            continue;
        }
        let is_true = matched.value(i);
        // The common case, a false condition for a device with nothing pending, costs no lookup
        // when the rule has no state at all.
        if !is_true && !windowed && rule.states.is_empty() {
            continue;
        }
        let Some(state) = (if is_true { Some(rule.states.entry(row.device.clone()).or_default()) } else { rule.states.get_mut(&row.device) }) else {
            continue;
        };
        if !state.raised {
            if !is_true {
                state.true_since = None;
                continue;
            }
            let since = *state.true_since.get_or_insert(row.time_ns);
            if row.time_ns - since >= rule.hold_ns {
                state.raised = true;
                state.true_since = None;
                let facts = columns.facts[i].expect("in scope");
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
            out.push(Transition::Repeat { rule_id: rule.id, device: row.device.clone(), at_ns: row.time_ns, values: row_values(row) });
        }
    }
}

/// The columns a condition reads; window columns advance each in-scope device's window state.
fn inputs(
    condition: &Condition,
    states: &mut HashMap<String, DeviceState, foldhash::fast::RandomState>,
    for_clear: bool,
    columns: &mut Columns,
    in_scope: &[bool],
) -> Result<Vec<ArrayRef>, String> {
    let mut out = Vec::with_capacity(condition.inputs.len());
    for input in &condition.inputs {
        out.push(match input {
            Input::Field(name) => columns.field(name),
            Input::Attribute(name) => columns.attribute(name),
            Input::Window(w) => {
                let spec = &condition.windows[*w];
                let mut b = Float64Builder::with_capacity(columns.rows.len());
                for (i, row) in columns.rows.iter().enumerate() {
                    if !in_scope[i] {
                        b.append_null();
                        continue;
                    }
                    let state = states.entry(row.device.clone()).or_default();
                    let windows = if for_clear { &mut state.clear_windows } else { &mut state.windows };
                    if windows.len() < condition.windows.len() {
                        windows.extend(condition.windows[windows.len()..].iter().map(WindowState::new));
                    }
                    let value = row.fields.iter().find(|(n, _)| *n == spec.field).and_then(|(_, v)| numeric(v));
                    b.append_option(windows[*w].push(spec, row.time_ns, value));
                }
                Arc::new(b.finish())
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
