//! One table's rows as every rule of a pass sees them: grouped by device and turned into Arrow
//! columns on first use, so each column is built once per pass whatever the number of rules.

use super::{ActiveRule, DeviceFacts, Devices};
use crate::condition::Input;
use crate::window::WindowSpec;
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, NullArray, StringBuilder, TimestampNanosecondBuilder, UInt64Builder,
};
use corral_model::{FieldValue, Row};
use std::collections::HashMap;
use std::sync::Arc;

/// The rows of one device within a pass.
pub(super) struct Group<'a> {
    pub number: u32,
    pub facts: Option<&'a DeviceFacts>,
    /// Indexes into the pass's rows, in arrival order.
    pub rows: Vec<usize>,
}

/// One table's rows as seen by every rule in the pass: grouped by device (so per-device state
/// is looked up once per device, not once per row) and turned into columns on first use.
pub(super) struct Columns<'a> {
    pub rows: &'a [Row],
    pub groups: Vec<Group<'a>>,
    built: HashMap<Input, ArrayRef>,
    /// Fields as numbers, for windows.
    numbers: HashMap<String, Arc<[Option<f64>]>>,
    /// Each window the pass's rules use, advanced once for the pass.
    pub windows: HashMap<WindowSpec, ArrayRef>,
}

impl<'a> Columns<'a> {
    pub(super) fn new(rows: &'a [Row], facts: &'a HashMap<String, Arc<DeviceFacts>>, devices: &mut Devices) -> Self {
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut last: Option<(&str, usize)> = None;
        for (i, row) in rows.iter().enumerate() {
            // A request's rows come from one device, so most rows share the previous row's group.
            let g = match last {
                Some((device, g)) if device == row.device => g,
                _ => *index.entry(&row.device).or_insert_with(|| {
                    let facts = facts.get(&row.device).map(|f| &**f);
                    groups.push(Group { number: devices.number(&row.device), facts, rows: Vec::new() });
                    groups.len() - 1
                }),
            };
            groups[g].rows.push(i);
            last = Some((&row.device, g));
        }
        Columns { rows, groups, built: HashMap::new(), numbers: HashMap::new(), windows: HashMap::new() }
    }

    pub(super) fn field(&mut self, name: &str) -> ArrayRef {
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

    pub(super) fn attribute(&mut self, name: &str) -> ArrayRef {
        let key = Input::Attribute(name.to_string());
        if let Some(c) = self.built.get(&key) {
            return c.clone();
        }
        let mut values: Vec<Option<&serde_json::Value>> = vec![None; self.rows.len()];
        for group in &self.groups {
            let value = group.facts.and_then(|f| f.attributes.get(name)).filter(|v| !v.is_null());
            group.rows.iter().for_each(|&i| values[i] = value);
        }
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

    /// A field's numeric value per row (text and missing values are `None`).
    pub(super) fn numbers(&mut self, name: &str) -> Arc<[Option<f64>]> {
        if let Some(n) = self.numbers.get(name) {
            return n.clone();
        }
        let mut finder = FieldFinder::new(name);
        let values: Arc<[Option<f64>]> = self.rows.iter().map(|r| finder.find(r).and_then(numeric)).collect();
        self.numbers.insert(name.to_string(), values.clone());
        values
    }

    /// Which groups `rule` applies to; `None` when none does.
    pub(super) fn in_scope(&self, rule: &ActiveRule) -> Option<Vec<bool>> {
        let scoped: Vec<bool> = self.groups.iter().map(|g| g.facts.is_some_and(|f| rule.in_scope(f))).collect();
        scoped.contains(&true).then_some(scoped)
    }
}

/// Finds one field in row after row. The rows of a batch usually list their fields in the same
/// order, so the place the previous row had it is tried first: one comparison instead of a scan.
struct FieldFinder<'n> {
    name: &'n str,
    at: usize,
}

impl<'n> FieldFinder<'n> {
    fn new(name: &'n str) -> Self {
        FieldFinder { name, at: 0 }
    }

    fn find<'r>(&mut self, row: &'r Row) -> Option<&'r FieldValue> {
        if let Some((n, v)) = row.fields.get(self.at)
            && n == self.name
        {
            return Some(v);
        }
        self.at = row.fields.iter().position(|(n, _)| n == self.name)?;
        Some(&row.fields[self.at].1)
    }
}

/// A value of a row for a column: a field, or a tag of the same name.
#[derive(Clone, Copy)]
enum Value<'r> {
    Field(&'r FieldValue),
    Tag(&'r str),
}

/// One message field as a column, typed by its first value; a row without the field is NULL.
fn field_column(rows: &[Row], name: &str) -> ArrayRef {
    let mut finder = FieldFinder::new(name);
    let values: Vec<Option<Value>> = rows
        .iter()
        .map(|r| finder.find(r).map(Value::Field).or_else(|| r.tags.iter().find(|(n, _)| n == name).map(|(_, v)| Value::Tag(v))))
        .collect();
    macro_rules! build {
        ($builder:ty, $variant:ident) => {{
            let mut b = <$builder>::with_capacity(rows.len());
            for v in &values {
                match v {
                    Some(Value::Field(FieldValue::$variant(x))) => b.append_value(*x),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match values.iter().flatten().next() {
        None => Arc::new(NullArray::new(rows.len())),
        Some(Value::Field(FieldValue::Float(_))) => build!(Float64Builder, Float),
        Some(Value::Field(FieldValue::Int(_))) => build!(Int64Builder, Int),
        Some(Value::Field(FieldValue::UInt(_))) => build!(UInt64Builder, UInt),
        Some(Value::Field(FieldValue::Bool(_))) => build!(BooleanBuilder, Bool),
        Some(Value::Field(FieldValue::Str(_)) | Value::Tag(_)) => {
            let mut b = StringBuilder::new();
            for v in &values {
                match v {
                    Some(Value::Field(FieldValue::Str(s))) => b.append_value(s),
                    Some(Value::Tag(s)) => b.append_value(s),
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
