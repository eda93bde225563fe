//! Rollups: a coarser table kept beside a raw one, e.g. `telemetry` → `telemetry_1h` with each
//! field's average, minimum, maximum, count, first and last value per device, tag set and hour.
//! A rollup is an ordinary table (queried, exported and retained like any other) whose rows the
//! platform writes: one per bucket, at the bucket's start.
//!
//! Maintained incrementally: the store notes the minutes where the source's rows land
//! ([`Store::changes`]); the lifecycle turns them into bucket ranges in its own saved queue, and
//! each range is recomputed from the source and written through the WAL like any write. A bucket
//! written again replaces its earlier version (a point is its time, device and tags, see
//! `points.rs`), so late data corrects the bucket it falls in. Buckets whose raw rows are past the
//! source's retention are not recomputed: the rollup then holds the only summary of them.

use crate::{ColumnKind, QueryEngine, Store, StoreError};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampNanosecondType, UInt64Type};
use corral_model::{Batch, FieldType, FieldValue, Row, TableName, WireError};
use corral_services::{RollupSpec, parse_duration};

/// The aggregates a rollup computes when its spec names none.
const DEFAULT_AGGREGATES: [&str; 6] = ["avg", "min", "max", "count", "first", "last"];
const ALL_AGGREGATES: [&str; 7] = ["avg", "min", "max", "count", "first", "last", "sum"];

/// A checked rollup spec, with its bucket width in nanoseconds.
#[derive(Debug, Clone)]
pub struct Rollup {
    pub spec: RollupSpec,
    pub every_ns: i64,
}

impl Rollup {
    /// Checks a spec: names, a bucket width that divides a day into whole minutes, known aggregates.
    pub fn new(mut spec: RollupSpec) -> Result<Rollup, WireError> {
        TableName::new(&spec.name).map_err(|e| WireError::bad_input(e.to_string()))?;
        TableName::new(&spec.source).map_err(|e| WireError::bad_input(e.to_string()))?;
        if spec.name == spec.source {
            return Err(WireError::bad_input("a rollup cannot read the table it writes"));
        }
        let every = parse_duration(&spec.every).map_err(WireError::bad_input)?;
        let secs = every.as_secs();
        if secs < 60 || secs % 60 != 0 || 86_400 % secs != 0 {
            return Err(WireError::bad_input(format!(
                "rollup buckets must be whole minutes that divide a day evenly (1m, 5m, 15m, 1h, 6h, 1d); got `{}`",
                spec.every
            )));
        }
        if let Some(bad) = spec.aggregates.iter().find(|a| !ALL_AGGREGATES.contains(&a.as_str())) {
            return Err(WireError::bad_input(format!("unknown aggregate `{bad}`; use {}", ALL_AGGREGATES.join(", "))));
        }
        spec.aggregates.dedup();
        Ok(Rollup { spec, every_ns: secs as i64 * 1_000_000_000 })
    }

    fn aggregates(&self) -> Vec<&str> {
        if self.spec.aggregates.is_empty() {
            DEFAULT_AGGREGATES.to_vec()
        } else {
            self.spec.aggregates.iter().map(String::as_str).collect()
        }
    }

    /// The bucket a time falls in (its start).
    pub fn bucket(&self, time_ns: i64) -> i64 {
        time_ns.div_euclid(self.every_ns) * self.every_ns
    }

    /// Recomputes every bucket in `[from_ns, to_ns)` (bucket-aligned) from the source and writes
    /// the result durably. Returns the rows written.
    pub async fn refresh(&self, store: &Store, engine: &QueryEngine, from_ns: i64, to_ns: i64) -> Result<usize, StoreError> {
        let Some(sql) = self.sql(store, from_ns, to_ns) else { return Ok(0) };
        let ctx = engine.session(None).await?;
        let batches = ctx.sql(&sql).await?.collect().await?;
        let table = TableName::new(&self.spec.name).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut batch = Batch::new(table);
        for result in &batches {
            batch.rows.extend(rows_of(result));
        }
        let written = batch.rows.len();
        if written > 0 {
            store.write(vec![batch]).await?;
        }
        Ok(written)
    }

    /// The query for one range, or `None` when the source has no numeric field to summarise.
    fn sql(&self, store: &Store, from_ns: i64, to_ns: i64) -> Option<String> {
        let columns = store.columns(&self.spec.source)?;
        let tags: Vec<&str> = columns.iter().filter(|c| c.kind == ColumnKind::Tag).map(|c| c.name.as_str()).collect();
        let fields: Vec<&str> = columns
            .iter()
            .filter(|c| matches!(c.kind, ColumnKind::Field(FieldType::Float | FieldType::Int | FieldType::UInt)))
            .map(|c| c.name.as_str())
            .filter(|name| self.spec.fields.is_empty() || self.spec.fields.iter().any(|f| f == name))
            .collect();
        if fields.is_empty() {
            return None;
        }
        let mut select = vec![
            format!(
                "date_bin(INTERVAL '{} seconds', time, TIMESTAMP '1970-01-01T00:00:00') AS time",
                self.every_ns / 1_000_000_000
            ),
            "device".to_string(),
        ];
        select.extend(tags.iter().map(|t| quote(t)));
        for field in &fields {
            for aggregate in self.aggregates() {
                let f = quote(field);
                let expr = match aggregate {
                    "first" => format!("first_value({f} ORDER BY time) FILTER (WHERE {f} IS NOT NULL)"),
                    "last" => format!("last_value({f} ORDER BY time) FILTER (WHERE {f} IS NOT NULL)"),
                    "avg" => format!("avg(CAST({f} AS DOUBLE))"),
                    other => format!("{other}({f})"),
                };
                select.push(format!("{expr} AS {}", quote(&format!("{field}_{aggregate}"))));
            }
        }
        let group: Vec<String> = (1..=2 + tags.len()).map(|i| i.to_string()).collect();
        Some(format!(
            "SELECT {} FROM {} WHERE time >= to_timestamp_nanos({from_ns}) AND time < to_timestamp_nanos({to_ns}) GROUP BY {}",
            select.join(", "),
            quote(&self.spec.source),
            group.join(", ")
        ))
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The query's rows as rows to store: `time`, `device`, the tags, then one field per column.
fn rows_of(batch: &RecordBatch) -> Vec<Row> {
    let schema = batch.schema();
    let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
    let devices = batch.column(1).as_string::<i32>();
    let mut rows: Vec<Row> = (0..batch.num_rows()).map(|i| Row::new(times.value(i), devices.value(i))).collect();
    for (c, field) in schema.fields().iter().enumerate().skip(2) {
        let column = batch.column(c);
        for (i, row) in rows.iter_mut().enumerate() {
            if column.is_null(i) {
                continue;
            }
            let name = field.name().clone();
            match column.data_type() {
                DataType::Utf8 => row.tags.push((name, column.as_string::<i32>().value(i).to_string())),
                DataType::Float64 => row.fields.push((name, FieldValue::Float(column.as_primitive::<Float64Type>().value(i)))),
                DataType::Int64 => row.fields.push((name, FieldValue::Int(column.as_primitive::<Int64Type>().value(i)))),
                DataType::UInt64 => row.fields.push((name, FieldValue::UInt(column.as_primitive::<UInt64Type>().value(i)))),
                other => tracing::warn!(column = %name, r#type = %other, "rollup column of an unexpected type skipped"),
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(every: &str) -> RollupSpec {
        RollupSpec { name: "t_1h".into(), source: "t".into(), every: every.into(), aggregates: vec![], fields: vec![] }
    }

    #[test]
    fn bucket_widths_must_divide_a_day_into_whole_minutes() {
        assert_eq!(Rollup::new(spec("1h")).unwrap().every_ns, 3_600_000_000_000);
        assert!(Rollup::new(spec("15m")).is_ok());
        assert!(Rollup::new(spec("1d")).is_ok());
        for bad in ["7m", "30s", "2d", "1w", "x"] {
            assert!(Rollup::new(spec(bad)).is_err(), "{bad}");
        }
        let mut same = spec("1h");
        same.name = "t".into();
        assert!(Rollup::new(same).is_err());
        let mut unknown = spec("1h");
        unknown.aggregates = vec!["median".into()];
        assert!(Rollup::new(unknown).unwrap_err().to_string().contains("median"));
    }
}
