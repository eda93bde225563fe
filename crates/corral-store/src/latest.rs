//! The latest row of every device, per table: what "where is each truck now?" and a device page's
//! current values ask for, answered without scanning history.
//!
//! SQL sees it as the schema `latest`: `SELECT device, latitude FROM latest.readings` has one row
//! per device, the one with the greatest `time` (on a tie, the one written last), every column as
//! in that row, the same as `SELECT DISTINCT ON (device) * FROM readings ORDER BY device, time
//! DESC`. It is kept on the write path, after the WAL append, like the write buffer.
//!
//! Two parts make it durable without a scan at start-up: `persisted`, the table's latest rows as
//! of the last snapshot (stored as one Parquet file listed in the manifest, loaded at open), and
//! `live`, every row newer than that seen since the process started (the WAL replay refills it).

use crate::buffer::{TableBuffer, align, concat_aligned};
use crate::schema::TableSchema;
use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampNanosecondType;
use corral_model::Row;
use std::collections::hash_map::Entry;

/// Looked up for every row written: foldhash rather than SipHash (see `schema.rs`).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct LatestRows {
    /// Newest row per device written since start (or replayed from the WAL).
    live: HashMap<String, Row>,
    /// The latest rows as of the last committed snapshot; may be older than `live`'s.
    persisted: Option<RecordBatch>,
    /// `persisted`'s time per device, so `live` never takes a row older than it.
    persisted_times: HashMap<String, i64>,
}

impl LatestRows {
    pub fn with_persisted(batch: RecordBatch) -> Self {
        let mut latest = LatestRows::default();
        latest.set_persisted(batch);
        latest
    }

    /// Takes note of rows just made durable. Clones one row per device per call at most.
    pub fn observe(&mut self, rows: &[Row]) {
        let mut newest: HashMap<&str, &Row> = HashMap::default();
        for row in rows {
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
                Some(current) => *current = row.clone(),
                None => {
                    self.live.insert(device.to_string(), row.clone());
                }
            }
        }
    }

    /// Whether the device ever wrote to the table (it then has a latest row).
    pub fn has_device(&self, device: &str) -> bool {
        self.live.contains_key(device) || self.persisted_times.contains_key(device)
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

    /// Starts over from `batch` (what a snapshot just committed), keeping live rows: they are
    /// never older than what the batch holds for their device.
    pub fn set_persisted(&mut self, batch: RecordBatch) {
        let devices = batch.column(1).as_string::<i32>();
        let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
        self.persisted_times = (0..batch.num_rows()).map(|i| (devices.value(i).to_string(), times.value(i))).collect();
        self.persisted = Some(batch);
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
        latest.observe(&rows);
        latest.observe(&[Row::new(5, "a").field("v", FieldValue::Float(0.5))]); // out of order: ignored
        latest.observe(&[Row::new(20, "b")]); // same time, written later: wins, with its null
        assert_eq!(devices_and_values(&latest.batch(&schema)), [("a".into(), Some(3.0)), ("b".into(), None)]);
    }

    #[test]
    fn persisted_rows_yield_only_to_newer_live_ones() {
        let rows = vec![Row::new(10, "a").field("v", FieldValue::Float(1.0)), Row::new(10, "b").field("v", FieldValue::Float(2.0))];
        let schema = schema_for(&rows);
        let mut before = LatestRows::default();
        before.observe(&rows);
        let mut latest = LatestRows::with_persisted(before.batch(&schema));
        latest.observe(&[Row::new(11, "a").field("v", FieldValue::Float(9.0)), Row::new(9, "b").field("v", FieldValue::Float(0.0))]);
        let mut got = devices_and_values(&latest.batch(&schema));
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(got, [("a".into(), Some(9.0)), ("b".into(), Some(2.0))]);
    }
}
