//! The latest row of every device, per table: what "where is each truck now?" and a device page's
//! current values ask for, answered without scanning history.
//!
//! SQL sees it as the schema `latest`: `SELECT device, latitude FROM latest.readings` has one row
//! per device, the one with the greatest `time` (a point written twice merged as in the table,
//! see `points.rs`), every column as in that row, the same as `SELECT DISTINCT ON (device) *
//! FROM readings ORDER BY device, time DESC`. It is kept on the write path, after the WAL append, like the write buffer.
//!
//! Two parts make it durable without a scan at start-up: `persisted`, the table's latest rows as
//! of the last snapshot (stored as one Parquet file listed in the manifest, loaded at open), and
//! `live`, every row newer than that seen since the process started (the WAL replay refills it).
//!
//! Beside each device's row it keeps which of the table's columns the device has ever written
//! ([`ColumnSet`]): a tenant-scoped query sees only the columns its tenant's devices wrote, not
//! the names other tenants gave their fields. The sets travel in the same file, as the extra
//! column [`WRITTEN_COLUMN`].

use crate::buffer::{TableBuffer, align, concat_aligned};
use crate::schema::TableSchema;
use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, TimestampNanosecondType};
use corral_model::Row;
use std::collections::hash_map::Entry;

/// Looked up for every row written: foldhash rather than SipHash (see `schema.rs`).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The column of the latest-rows file that holds each device's [`ColumnSet`] (absent in files
/// written before it existed).
pub const WRITTEN_COLUMN: &str = "__corral_written_columns";

/// Column positions of a table's schema, as a bit set (positions never change: a table's
/// schema only grows at the end).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ColumnSet(Vec<u64>);

impl ColumnSet {
    pub fn insert(&mut self, position: usize) {
        let (word, bit) = (position / 64, position % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    pub fn union(&mut self, other: &ColumnSet) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a |= b);
    }

    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, bits)| (0..64).filter(move |b| bits & (1 << b) != 0).map(move |b| w * 64 + b))
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn from_bytes(bytes: &[u8]) -> ColumnSet {
        ColumnSet(bytes.chunks(8).map(|c| c.iter().rev().fold(0u64, |w, b| w << 8 | u64::from(*b))).collect())
    }
}

/// `row`'s fields replace `current`'s of the same name; the others stay.
fn overwrite(current: &mut Row, row: &Row) {
    for (name, value) in &row.fields {
        match current.fields.iter_mut().find(|(n, _)| n == name) {
            Some((_, old)) => *old = value.clone(),
            None => current.fields.push((name.clone(), value.clone())),
        }
    }
}

#[derive(Default)]
pub struct LatestRows {
    /// Newest row per device written since start (or replayed from the WAL).
    live: HashMap<String, Row>,
    /// The latest rows as of the last committed snapshot; may be older than `live`'s.
    persisted: Option<RecordBatch>,
    /// `persisted`'s time per device, so `live` never takes a row older than it.
    persisted_times: HashMap<String, i64>,
    /// The columns each device has written a value to, since the table began.
    written: HashMap<String, ColumnSet>,
}

impl LatestRows {
    pub fn with_persisted(batch: RecordBatch) -> Self {
        let mut latest = LatestRows::default();
        latest.set_persisted(batch);
        latest
    }

    /// Takes note of rows just made durable (already in `schema`). Clones one row per device per
    /// call at most.
    pub fn observe(&mut self, rows: &[Row], schema: &TableSchema) {
        let mut newest: HashMap<&str, &Row> = HashMap::default();
        for row in rows {
            self.note_written(row, schema);
            match newest.entry(row.device.as_str()) {
                Entry::Occupied(mut e) if row.time_ns >= e.get().time_ns => {
                    e.insert(row);
                }
                Entry::Occupied(_) => {}
                Entry::Vacant(e) => {
                    e.insert(row);
                }
            }
        }
        for (device, row) in newest {
            if self.persisted_times.get(device).is_some_and(|&t| t > row.time_ns) {
                continue;
            }
            match self.live.get_mut(device) {
                Some(current) if current.time_ns > row.time_ns => {}
                // The same point written again: its fields overwrite, the others stay (as in
                // the table, see `points.rs`).
                Some(current) if current.time_ns == row.time_ns && current.tags == row.tags => overwrite(current, row),
                Some(current) => *current = row.clone(),
                None => {
                    self.live.insert(device.to_string(), row.clone());
                }
            }
        }
    }

    /// Each device's newest time, live or persisted.
    pub fn newest_times(&self) -> Vec<(String, i64)> {
        let mut newest: HashMap<&str, i64> = self.persisted_times.iter().map(|(d, &t)| (d.as_str(), t)).collect();
        for (device, row) in &self.live {
            let time = newest.entry(device.as_str()).or_insert(row.time_ns);
            *time = (*time).max(row.time_ns);
        }
        newest.into_iter().map(|(d, t)| (d.to_string(), t)).collect()
    }

    /// Whether the device ever wrote to the table (it then has a latest row).
    pub fn has_device(&self, device: &str) -> bool {
        self.live.contains_key(device) || self.persisted_times.contains_key(device)
    }

    fn note_written(&mut self, row: &Row, schema: &TableSchema) {
        let set = match self.written.get_mut(row.device.as_str()) {
            Some(set) => set,
            None => self.written.entry(row.device.clone()).or_default(),
        };
        let names = row.tags.iter().map(|(name, _)| name).chain(row.fields.iter().map(|(name, _)| name));
        names.filter_map(|name| schema.position(name)).for_each(|position| set.insert(position));
    }

    /// The columns any of `devices` has written (`time` and `device` are not counted).
    pub fn written_by<'a>(&self, devices: impl Iterator<Item = &'a str>) -> ColumnSet {
        let mut all = ColumnSet::default();
        devices.filter_map(|d| self.written.get(d)).for_each(|set| all.union(set));
        all
    }

    /// What the latest-rows file holds: [`LatestRows::batch`] and, last, [`WRITTEN_COLUMN`].
    pub fn batch_for_file(&self, schema: &TableSchema) -> RecordBatch {
        let batch = self.batch(schema);
        let devices = batch.column(1).as_string::<i32>();
        let sets: Vec<Option<Vec<u8>>> =
            devices.iter().map(|d| d.and_then(|d| self.written.get(d)).map(ColumnSet::to_bytes)).collect();
        let written: ArrayRef = std::sync::Arc::new(BinaryArray::from_iter(sets));
        let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(WRITTEN_COLUMN, DataType::Binary, true));
        let mut columns = batch.columns().to_vec();
        columns.push(written);
        RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).expect("one more column of the same length")
    }

    /// One row per device, aligned to the table's current schema, sorted by device.
    pub fn batch(&self, schema: &TableSchema) -> RecordBatch {
        let arrow = schema.arrow();
        let mut live: Vec<&Row> = self.live.values().collect();
        live.sort_by(|a, b| a.device.cmp(&b.device));
        let mut buffer = TableBuffer::new(schema);
        buffer.append(schema, live.iter().copied());
        let mut parts = buffer.take(schema);
        if let Some(persisted) = &self.persisted {
            // A persisted row survives unless a live row of the same device is at least as new.
            let devices = persisted.column(1).as_string::<i32>();
            let times = persisted.column(0).as_primitive::<TimestampNanosecondType>();
            let keep: BooleanArray = (0..persisted.num_rows())
                .map(|i| Some(self.live.get(devices.value(i)).is_none_or(|row| row.time_ns < times.value(i))))
                .collect();
            let kept = filter_record_batch(persisted, &keep).expect("mask has the batch's length");
            parts.push(align(&arrow, &kept));
        }
        concat_aligned(&arrow, &parts)
    }

    /// Starts over from `batch` (what a snapshot just committed, as [`LatestRows::batch_for_file`]
    /// made it), keeping live rows: they are never older than what the batch holds for their
    /// device.
    pub fn set_persisted(&mut self, mut batch: RecordBatch) {
        if batch.schema().fields().last().is_some_and(|f| f.name() == WRITTEN_COLUMN) {
            let written = batch.num_columns() - 1;
            self.take_written(&batch, written);
            batch.remove_column(written);
        }
        let devices = batch.column(1).as_string::<i32>();
        let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
        self.persisted_times = (0..batch.num_rows()).map(|i| (devices.value(i).to_string(), times.value(i))).collect();
        self.persisted = Some(batch);
    }

    /// Drops the rows `deletes` names (a purge deleted them from the table) and, for a device
    /// whose data is deleted, which columns it wrote. Returns whether anything changed.
    pub fn forget(&mut self, deletes: impl Fn(&str, i64) -> bool, device_forgotten: Option<&str>) -> bool {
        let live_before = self.live.len();
        self.live.retain(|device, row| !deletes(device, row.time_ns));
        let mut changed = self.live.len() != live_before;
        if let Some(device) = device_forgotten {
            changed |= self.written.remove(device).is_some();
        }
        if let Some(persisted) = &self.persisted {
            let devices = persisted.column(1).as_string::<i32>();
            let times = persisted.column(0).as_primitive::<TimestampNanosecondType>();
            let keep: BooleanArray =
                (0..persisted.num_rows()).map(|i| Some(!deletes(devices.value(i), times.value(i)))).collect();
            if keep.false_count() > 0 {
                let kept = filter_record_batch(persisted, &keep).expect("mask has the batch's length");
                self.persisted_times.retain(|device, time| !deletes(device, *time));
                self.persisted = Some(kept);
                changed = true;
            }
        }
        changed
    }

    /// Adds the sets of column `written` of a file's batch; a file from before the sets were
    /// kept counts what its row holds.
    fn take_written(&mut self, batch: &RecordBatch, written: usize) {
        let devices = batch.column(1).as_string::<i32>();
        let sets = batch.column(written).as_binary_opt::<i32>();
        for row in 0..batch.num_rows() {
            let set = match sets.filter(|s| s.is_valid(row)) {
                Some(sets) => ColumnSet::from_bytes(sets.value(row)),
                None => {
                    let mut set = ColumnSet::default();
                    (2..written).filter(|&c| batch.column(c).is_valid(row)).for_each(|c| set.insert(c));
                    set
                }
            };
            self.written.entry(devices.value(row).to_string()).or_default().union(&set);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::NewColumns;
    use arrow::array::Array;
    use corral_model::{Batch, FieldValue, TableName};

    fn schema_for(rows: &[Row]) -> TableSchema {
        let mut schema = TableSchema::default();
        let batch = Batch { table: TableName::new("t").unwrap(), rows: rows.to_vec() };
        let mut pending = NewColumns::default();
        schema.check(&batch, &mut pending, usize::MAX).unwrap();
        schema.extend(pending.columns);
        schema
    }

    fn devices_and_values(batch: &RecordBatch) -> Vec<(String, Option<f64>)> {
        let devices = batch.column(1).as_string::<i32>();
        let values = batch.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        (0..batch.num_rows()).map(|i| (devices.value(i).to_string(), values.is_valid(i).then(|| values.value(i)))).collect()
    }

    #[test]
    fn newest_time_wins_and_late_arrivals_do_not_overwrite() {
        let rows = vec![
            Row::new(20, "b").field("v", FieldValue::Float(2.0)),
            Row::new(10, "a").field("v", FieldValue::Float(1.0)),
            Row::new(30, "a").field("v", FieldValue::Float(3.0)),
        ];
        let schema = schema_for(&rows);
        let mut latest = LatestRows::default();
        latest.observe(&rows, &schema);
        latest.observe(&[Row::new(5, "a").field("v", FieldValue::Float(0.5))], &schema); // out of order: ignored
        // The same point again: its fields overwrite, a field it leaves out keeps its value.
        latest.observe(&[Row::new(20, "b").field("w", FieldValue::Float(9.0))], &schema);
        assert_eq!(devices_and_values(&latest.batch(&schema)), [("a".into(), Some(3.0)), ("b".into(), Some(2.0))]);
    }

    #[test]
    fn persisted_rows_yield_only_to_newer_live_ones() {
        let rows =
            vec![Row::new(10, "a").field("v", FieldValue::Float(1.0)), Row::new(10, "b").field("v", FieldValue::Float(2.0))];
        let schema = schema_for(&rows);
        let mut before = LatestRows::default();
        before.observe(&rows, &schema);
        let mut latest = LatestRows::with_persisted(before.batch(&schema));
        latest.observe(
            &[Row::new(11, "a").field("v", FieldValue::Float(9.0)), Row::new(9, "b").field("v", FieldValue::Float(0.0))],
            &schema,
        );
        let mut got = devices_and_values(&latest.batch(&schema));
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(got, [("a".into(), Some(9.0)), ("b".into(), Some(2.0))]);
    }

    /// Regression (tenant isolation): a scoped query listed the names other tenants gave
    /// their fields; it now sees only the columns its devices wrote, after a restart too.
    #[test]
    fn columns_written_per_device_survive_the_file() {
        let rows = vec![
            Row::new(10, "a").field("v", FieldValue::Float(1.0)),
            Row::new(10, "b").field("v", FieldValue::Float(2.0)).field("secret", FieldValue::Int(7)),
            Row::new(11, "a").field("w", FieldValue::Bool(true)),
        ];
        let schema = schema_for(&rows);
        let mut before = LatestRows::default();
        before.observe(&rows, &schema);
        let seen = |latest: &LatestRows, devices: &[&str]| -> Vec<usize> {
            latest.written_by(devices.iter().copied()).positions().collect()
        };
        let (v, secret, w) = (schema.position("v").unwrap(), schema.position("secret").unwrap(), schema.position("w").unwrap());
        assert_eq!(seen(&before, &["a"]), [v, w], "a's newest row lacks v, yet a wrote it");
        assert_eq!(seen(&before, &["b"]), [v, secret]);
        assert_eq!(seen(&before, &["a", "b"]), [v, secret, w]);
        let file = before.batch_for_file(&schema);
        assert_eq!(file.schema().fields().last().unwrap().name(), WRITTEN_COLUMN);
        let after = LatestRows::with_persisted(file);
        assert_eq!(seen(&after, &["a"]), [v, w]);
        assert_eq!(seen(&after, &["b"]), [v, secret]);
        assert_eq!(after.batch(&schema).num_columns(), schema.columns().len(), "the sets are not a column of latest rows");
        let mut set = ColumnSet::default();
        [3, 64, 130].into_iter().for_each(|c| set.insert(c));
        assert_eq!(ColumnSet::from_bytes(&set.to_bytes()), set);
        // A file from before the sets were kept: each device is taken to have written what its
        // newest row holds (`persist::read_latest` gives such a file a null column).
        let old = before.batch(&schema);
        let mut fields: Vec<Field> = old.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(WRITTEN_COLUMN, DataType::Binary, true));
        let mut columns = old.columns().to_vec();
        columns.push(arrow::array::new_null_array(&DataType::Binary, old.num_rows()));
        let legacy = LatestRows::with_persisted(RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).unwrap());
        assert_eq!(seen(&legacy, &["a"]), [w]);
        assert_eq!(seen(&legacy, &["b"]), [v, secret]);
    }
}
