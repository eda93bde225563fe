//! The write buffer of one table: rows that are durable in the WAL but not yet in Parquet, held as
//! Arrow builders (the open chunk) and finished record batches (sealed chunks).

use crate::schema::{ColumnKind, TableSchema};
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
    UInt64Builder, new_null_array,
};
use arrow::datatypes::SchemaRef;
use corral_model::{FieldType, FieldValue, Row};
use std::sync::Arc;

/// Rows in the open chunk before it is sealed into a record batch.
const SEAL_ROWS: usize = 64 * 1024;
/// Sealed chunks beyond this count are merged so queries do not walk thousands of tiny batches.
const MERGE_CHUNKS: usize = 32;

enum ColumnBuilder {
    Time(TimestampNanosecondBuilder),
    Str(StringBuilder),
    Float(Float64Builder),
    Int(Int64Builder),
    UInt(UInt64Builder),
    Bool(BooleanBuilder),
}

impl ColumnBuilder {
    fn new(kind: ColumnKind) -> Self {
        match kind {
            ColumnKind::Time => ColumnBuilder::Time(TimestampNanosecondBuilder::new().with_timezone("UTC")),
            ColumnKind::Device | ColumnKind::Tag | ColumnKind::Field(FieldType::Str) => ColumnBuilder::Str(StringBuilder::new()),
            ColumnKind::Field(FieldType::Float) => ColumnBuilder::Float(Float64Builder::new()),
            ColumnKind::Field(FieldType::Int) => ColumnBuilder::Int(Int64Builder::new()),
            ColumnKind::Field(FieldType::UInt) => ColumnBuilder::UInt(UInt64Builder::new()),
            ColumnKind::Field(FieldType::Bool) => ColumnBuilder::Bool(BooleanBuilder::new()),
        }
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            ColumnBuilder::Time(b) => b.append_nulls(n),
            ColumnBuilder::Str(b) => b.append_nulls(n),
            ColumnBuilder::Float(b) => b.append_nulls(n),
            ColumnBuilder::Int(b) => b.append_nulls(n),
            ColumnBuilder::UInt(b) => b.append_nulls(n),
            ColumnBuilder::Bool(b) => b.append_nulls(n),
        }
    }

    /// Appends a value whose type the schema check already matched; a mismatch (possible only on
    /// replay of a damaged record) becomes a null rather than a panic.
    fn append_value(&mut self, value: &FieldValue) {
        match (self, value) {
            (ColumnBuilder::Float(b), FieldValue::Float(v)) => b.append_value(*v),
            (ColumnBuilder::Int(b), FieldValue::Int(v)) => b.append_value(*v),
            (ColumnBuilder::UInt(b), FieldValue::UInt(v)) => b.append_value(*v),
            (ColumnBuilder::Bool(b), FieldValue::Bool(v)) => b.append_value(*v),
            (ColumnBuilder::Str(b), FieldValue::Str(v)) => b.append_value(v),
            (b, _) => b.append_nulls(1),
        }
    }

    /// A tag value (tags are string columns).
    fn append_str(&mut self, value: &str) {
        match self {
            ColumnBuilder::Str(b) => b.append_value(value),
            b => b.append_nulls(1),
        }
    }

    /// A copy of what the builder holds, leaving it open (for queries between seals).
    fn finish_cloned(&self) -> ArrayRef {
        match self {
            ColumnBuilder::Time(b) => Arc::new(b.finish_cloned()),
            ColumnBuilder::Str(b) => Arc::new(b.finish_cloned()),
            ColumnBuilder::Float(b) => Arc::new(b.finish_cloned()),
            ColumnBuilder::Int(b) => Arc::new(b.finish_cloned()),
            ColumnBuilder::UInt(b) => Arc::new(b.finish_cloned()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish_cloned()),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Time(b) => Arc::new(b.finish()),
            ColumnBuilder::Str(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::UInt(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// Durable-but-unpersisted rows of one table. Dropped (emptied) when a snapshot takes its chunks to
/// Parquet.
pub struct TableBuffer {
    builders: Vec<ColumnBuilder>,
    open_rows: usize,
    sealed: Vec<RecordBatch>,
    /// Scratch: which columns the current row set, so the rest get a null.
    touched: Vec<bool>,
}

impl TableBuffer {
    pub fn new(schema: &TableSchema) -> Self {
        let mut buffer = TableBuffer { builders: Vec::new(), open_rows: 0, sealed: Vec::new(), touched: Vec::new() };
        buffer.follow_schema(schema);
        buffer
    }

    /// Adds builders for columns the schema gained, padded with nulls for the rows already open.
    pub fn follow_schema(&mut self, schema: &TableSchema) {
        for column in &schema.columns()[self.builders.len()..] {
            let mut builder = ColumnBuilder::new(column.kind);
            builder.append_nulls(self.open_rows);
            self.builders.push(builder);
        }
        self.touched.resize(self.builders.len(), false);
    }

    pub fn rows(&self) -> usize {
        self.open_rows + self.sealed.iter().map(RecordBatch::num_rows).sum::<usize>()
    }

    /// Appends rows whose columns the schema already has (the write path checked and extended it).
    pub fn append<'a>(&mut self, schema: &TableSchema, rows: impl IntoIterator<Item = &'a Row>) {
        self.follow_schema(schema);
        for row in rows {
            self.touched.iter_mut().for_each(|t| *t = false);
            if let ColumnBuilder::Time(b) = &mut self.builders[0] {
                b.append_value(row.time_ns);
            }
            if let ColumnBuilder::Str(b) = &mut self.builders[1] {
                b.append_value(&row.device);
            }
            self.touched[0] = true;
            self.touched[1] = true;
            for (name, value) in &row.tags {
                if let Some(i) = schema.position(name).filter(|&i| !self.touched[i]) {
                    self.builders[i].append_str(value);
                    self.touched[i] = true;
                }
            }
            for (name, value) in &row.fields {
                if let Some(i) = schema.position(name).filter(|&i| !self.touched[i]) {
                    self.builders[i].append_value(value);
                    self.touched[i] = true;
                }
            }
            for (builder, touched) in self.builders.iter_mut().zip(&self.touched) {
                if !touched {
                    builder.append_nulls(1);
                }
            }
            self.open_rows += 1;
        }
        if self.open_rows >= SEAL_ROWS {
            self.seal(schema);
        }
    }

    /// Finishes the open chunk into a record batch (so a query can see it without copying).
    pub fn seal(&mut self, schema: &TableSchema) {
        if self.open_rows == 0 {
            return;
        }
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(ColumnBuilder::finish).collect();
        let arrow = schema.arrow();
        let fields = arrow.fields()[..columns.len()].to_vec();
        let batch_schema = Arc::new(arrow::datatypes::Schema::new(fields));
        let batch = RecordBatch::try_new(batch_schema, columns).expect("builders follow the schema");
        self.sealed.push(batch);
        self.open_rows = 0;
        if self.sealed.len() > MERGE_CHUNKS {
            let merged = concat_aligned(&arrow, &self.sealed);
            self.sealed = vec![merged];
        }
    }

    /// The chunks as a query sees them, aligned to the current schema; the buffer keeps them.
    /// The open chunk is copied rather than sealed, so frequent queries do not fragment the
    /// buffer into tiny batches (and the merges those would cost).
    pub fn snapshot(&self, schema: &TableSchema) -> Vec<RecordBatch> {
        let arrow = schema.arrow();
        let mut out: Vec<RecordBatch> = self.sealed.iter().map(|b| align(&arrow, b)).collect();
        if self.open_rows > 0 {
            let columns: Vec<ArrayRef> = self.builders.iter().map(ColumnBuilder::finish_cloned).collect();
            let fields = arrow.fields()[..columns.len()].to_vec();
            let open = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
                .expect("builders follow the schema");
            out.push(align(&arrow, &open));
        }
        out
    }

    /// Seals and hands over every chunk, leaving the buffer empty (for persistence).
    pub fn take(&mut self, schema: &TableSchema) -> Vec<RecordBatch> {
        self.seal(schema);
        let arrow = schema.arrow();
        std::mem::take(&mut self.sealed).iter().map(|b| align(&arrow, b)).collect()
    }
}

/// A batch from before the table gained columns, widened with all-null columns.
pub fn align(schema: &SchemaRef, batch: &RecordBatch) -> RecordBatch {
    if batch.num_columns() == schema.fields().len() {
        return batch.clone().with_schema(schema.clone()).unwrap_or_else(|_| batch.clone());
    }
    let mut columns = batch.columns().to_vec();
    for field in &schema.fields()[columns.len()..] {
        columns.push(new_null_array(field.data_type(), batch.num_rows()));
    }
    RecordBatch::try_new(schema.clone(), columns).expect("aligned columns follow the schema")
}

pub fn concat_aligned(schema: &SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
    let aligned: Vec<RecordBatch> = batches.iter().map(|b| align(schema, b)).collect();
    arrow::compute::concat_batches(schema, &aligned).expect("aligned batches share the schema")
}

/// Rough bytes rows cost in the buffer, for the memory ceiling: every column of the table takes a
/// slot in every row (a null float still occupies 8 bytes), plus string contents. Builders grow by
/// doubling, so this under-counts by up to 2x between seals; the ceiling's headroom covers that.
pub fn estimate_bytes(rows: &[Row], table_columns: usize) -> usize {
    let strings: usize = rows
        .iter()
        .map(|r| {
            r.device.len()
                + r.tags.iter().map(|(_, v)| v.len()).sum::<usize>()
                + r.fields.iter().map(|(_, v)| if let FieldValue::Str(s) = v { s.len() } else { 0 }).sum::<usize>()
        })
        .sum();
    rows.len() * (table_columns * 9 + 8) + strings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Column;
    use arrow::array::{Array, Float64Array};

    #[test]
    fn columns_added_later_are_null_for_earlier_rows() {
        let mut schema = TableSchema::default();
        schema.extend([Column { name: "a".into(), kind: ColumnKind::Field(FieldType::Float) }]);
        let mut buffer = TableBuffer::new(&schema);
        buffer.append(&schema, &[Row::new(1, "d").field("a", FieldValue::Float(1.0))]);
        schema.extend([Column { name: "b".into(), kind: ColumnKind::Field(FieldType::Float) }]);
        buffer.append(&schema, &[Row::new(2, "d").field("b", FieldValue::Float(2.0))]);
        let chunks = buffer.snapshot(&schema);
        let all = concat_aligned(&schema.arrow(), &chunks);
        assert_eq!(all.num_rows(), 2);
        let b = all.column(3).as_any().downcast_ref::<Float64Array>().unwrap();
        assert!(b.is_null(0));
        assert_eq!(b.value(1), 2.0);
        let a = all.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        assert!(a.is_null(1));
    }
}
