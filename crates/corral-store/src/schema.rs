//! Schema on write. A table's columns only ever grow: a new field adds a nullable column, a field
//! whose type differs from its column is rejected (naming the field), and a column never changes type.

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use corral_model::{Batch, FieldType, WireError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Column lookups run for every field of every row written, so they use foldhash (randomly
/// seeded, several times faster than SipHash); the column limit bounds what a hostile writer can
/// put in these maps.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Every table's first two columns.
pub const TIME: &str = "time";
pub const DEVICE: &str = "device";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "type")]
pub enum ColumnKind {
    Time,
    Device,
    /// A string dimension (line protocol tags).
    Tag,
    Field(FieldType),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(flatten)]
    pub kind: ColumnKind,
}

/// Columns a request adds, in first-seen order, with a by-name index (a request may carry many).
#[derive(Debug, Default)]
pub struct NewColumns {
    pub columns: Vec<Column>,
    kinds: HashMap<String, ColumnKind>,
}

/// The columns of one telemetry table, in the order they were first seen.
#[derive(Debug, Clone)]
pub struct TableSchema {
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    arrow: SchemaRef,
}

pub fn arrow_type(kind: ColumnKind) -> DataType {
    match kind {
        ColumnKind::Time => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        ColumnKind::Device | ColumnKind::Tag | ColumnKind::Field(FieldType::Str) => DataType::Utf8,
        ColumnKind::Field(FieldType::Float) => DataType::Float64,
        ColumnKind::Field(FieldType::Int) => DataType::Int64,
        ColumnKind::Field(FieldType::UInt) => DataType::UInt64,
        ColumnKind::Field(FieldType::Bool) => DataType::Boolean,
    }
}

impl Default for TableSchema {
    fn default() -> Self {
        Self::from_columns(vec![
            Column { name: TIME.into(), kind: ColumnKind::Time },
            Column { name: DEVICE.into(), kind: ColumnKind::Device },
        ])
    }
}

impl TableSchema {
    pub fn from_columns(columns: Vec<Column>) -> Self {
        let index = columns.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.kind), !matches!(c.kind, ColumnKind::Time | ColumnKind::Device)))
            .collect();
        TableSchema { columns, index, arrow: Arc::new(Schema::new(fields)) }
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn arrow(&self) -> SchemaRef {
        self.arrow.clone()
    }

    /// The columns that identify a point: `time`, `device` and every tag (see `points.rs`).
    pub fn key_columns(&self) -> Vec<usize> {
        let tags = self.columns.iter().enumerate().filter(|(_, c)| c.kind == ColumnKind::Tag).map(|(i, _)| i);
        [0, 1].into_iter().chain(tags).collect()
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Checks `batch` against this schema plus the columns `pending` already claims for the same
    /// request, and adds any new columns to `pending`. A table may not grow beyond `max_columns`
    /// (so one device cannot make every row of a shared table arbitrarily wide). Nothing is
    /// changed on error.
    pub fn check(&self, batch: &Batch, pending: &mut NewColumns, max_columns: usize) -> Result<(), WireError> {
        let table = batch.table.as_str();
        for (row_no, row) in batch.rows.iter().enumerate() {
            let tags = row.tags.iter().map(|(k, _)| (k, ColumnKind::Tag));
            let fields = row.fields.iter().map(|(k, v)| (k, ColumnKind::Field(v.field_type())));
            for (name, kind) in tags.chain(fields) {
                if name == TIME || name == DEVICE {
                    return Err(WireError::bad_input(format!(
                        "row {}: \"{name}\" is a reserved column of table \"{table}\"",
                        row_no + 1
                    )));
                }
                let existing = self.position(name).map(|i| self.columns[i].kind).or_else(|| pending.kinds.get(name).copied());
                match existing {
                    Some(have) if have == kind => {}
                    Some(have) => {
                        return Err(WireError::bad_input(format!(
                            "row {}: field \"{name}\" of table \"{table}\" is {}, but this request sends {}; \
                             nothing from this request was stored",
                            row_no + 1,
                            describe(have),
                            describe(kind)
                        )));
                    }
                    None if self.columns.len() + pending.columns.len() >= max_columns => {
                        return Err(WireError::bad_input(format!(
                            "row {}: field \"{name}\" would give table \"{table}\" more than {max_columns} columns \
                             (the limit is max_columns_per_table); nothing from this request was stored",
                            row_no + 1
                        )));
                    }
                    None => {
                        pending.kinds.insert(name.clone(), kind);
                        pending.columns.push(Column { name: name.clone(), kind });
                    }
                }
            }
        }
        Ok(())
    }

    pub fn extend(&mut self, new_columns: impl IntoIterator<Item = Column>) {
        let mut columns = std::mem::take(&mut self.columns);
        for c in new_columns {
            if !columns.iter().any(|have| have.name == c.name) {
                columns.push(c);
            }
        }
        *self = Self::from_columns(columns);
    }
}

fn describe(kind: ColumnKind) -> String {
    match kind {
        ColumnKind::Field(t) => format!("a {} field", t.as_str()),
        ColumnKind::Tag => "a tag".into(),
        ColumnKind::Time | ColumnKind::Device => "a reserved column".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::{FieldValue, Row, TableName};

    fn batch(rows: Vec<Row>) -> Batch {
        Batch { table: TableName::telemetry(), rows }
    }

    #[test]
    fn new_fields_are_claimed_and_conflicts_name_the_field() {
        let mut schema = TableSchema::default();
        let mut pending = NewColumns::default();
        schema.check(&batch(vec![Row::new(0, "d").field("t", FieldValue::Float(1.0))]), &mut pending, 100).unwrap();
        assert_eq!(pending.columns.len(), 1);
        schema.extend(pending.columns);
        let err = schema
            .check(&batch(vec![Row::new(0, "d").field("t", FieldValue::Str("x".into()))]), &mut NewColumns::default(), 100)
            .unwrap_err();
        assert!(err.message.contains("field \"t\""), "{}", err.message);
        assert!(err.message.contains("float"), "{}", err.message);
    }

    #[test]
    fn a_conflict_inside_one_request_is_caught() {
        let schema = TableSchema::default();
        let rows = vec![Row::new(0, "d").field("x", FieldValue::Float(1.0)), Row::new(1, "d").field("x", FieldValue::Bool(true))];
        let err = schema.check(&batch(rows), &mut NewColumns::default(), 100).unwrap_err();
        assert!(err.message.starts_with("row 2"), "{}", err.message);
    }

    #[test]
    fn tables_stop_growing_at_the_column_limit() {
        let schema = TableSchema::default();
        let row = (0..10).fold(Row::new(0, "d"), |r, i| r.field(format!("f{i}"), FieldValue::Float(1.0)));
        let err = schema.check(&batch(vec![row]), &mut NewColumns::default(), 8).unwrap_err();
        assert!(err.message.contains("more than 8 columns"), "{}", err.message);
    }
}
