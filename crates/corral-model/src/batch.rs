//! Decoded telemetry. Row-oriented on purpose: decoders produce rows one message at a time, and the
//! store turns them into Arrow columns once the WAL holds them.

use serde::{Deserialize, Serialize};

/// A field's type. JSON numbers are always `Float`, so `3` and `3.5` from the same sensor never
/// conflict; line protocol's `i` and `u` suffixes give `Int` and `UInt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Float,
    Int,
    UInt,
    Bool,
    Str,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Int => "integer",
            FieldType::UInt => "unsigned",
            FieldType::Bool => "boolean",
            FieldType::Str => "string",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
}

impl FieldValue {
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::Float(_) => FieldType::Float,
            FieldValue::Int(_) => FieldType::Int,
            FieldValue::UInt(_) => FieldType::UInt,
            FieldValue::Bool(_) => FieldType::Bool,
            FieldValue::Str(_) => FieldType::Str,
        }
    }
}

/// One point in time from one device: tags (string dimensions, line protocol only for now) and
/// fields (the measured values).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Unix nanoseconds, UTC.
    pub time_ns: i64,
    pub device: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
}

impl Row {
    pub fn new(time_ns: i64, device: impl Into<String>) -> Self {
        Row { time_ns, device: device.into(), tags: Vec::new(), fields: Vec::new() }
    }
    pub fn field(mut self, name: impl Into<String>, value: FieldValue) -> Self {
        self.fields.push((name.into(), value));
        self
    }
    pub fn tag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((name.into(), value.into()));
        self
    }
}

/// Rows bound for one table. A request may produce several batches (one per table).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub table: crate::TableName,
    pub rows: Vec<Row>,
}

impl Batch {
    pub fn new(table: crate::TableName) -> Self {
        Batch { table, rows: Vec::new() }
    }
    /// Number of field values (what "points" means in InfluxDB's sense).
    pub fn value_count(&self) -> usize {
        self.rows.iter().map(|r| r.fields.len()).sum()
    }
}
