//! Query results on the wire: JSON `{"columns","types","rows","truncated"}` and CSV.

use crate::error::{ApiError, ApiResult};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit};
use arrow::datatypes::{UInt8Type, UInt16Type, UInt32Type, UInt64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, SecondsFormat};
use corral_services::SqlResult;
use serde_json::{Value, json};

/// A query's result as JSON.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct QueryAnswer {
    /// The columns' names, in order.
    columns: Vec<String>,
    /// The columns' types: `timestamp`, `float`, `integer`, `unsigned`, `boolean`, `string`, or
    /// another SQL type's name.
    types: Vec<String>,
    /// Rows, each a value per column: numbers, strings, booleans, timestamps as RFC 3339 text (UTC,
    /// as many fractional digits as needed), null for no value.
    rows: Vec<Vec<Value>>,
    /// How many rows `rows` holds.
    row_count: usize,
    /// True when more rows matched than the answer holds (the row limit cut it).
    truncated: bool,
}

pub fn to_json(result: &SqlResult) -> QueryAnswer {
    let columns = result.schema.fields().iter().map(|f| f.name().clone()).collect();
    let types = result.schema.fields().iter().map(|f| type_name(f.data_type())).collect();
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for batch in &result.batches {
        let start = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(batch.num_columns())));
        for column in batch.columns() {
            for (i, value) in column_values(column).into_iter().enumerate() {
                rows[start + i].push(value);
            }
        }
    }
    QueryAnswer { columns, types, row_count: rows.len(), rows, truncated: result.truncated }
}

/// Names a user recognises from SQL, not Arrow's internals.
fn type_name(t: &DataType) -> String {
    match t {
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Float64 | DataType::Float32 => "float".into(),
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => "integer".into(),
        DataType::UInt64 | DataType::UInt32 | DataType::UInt16 | DataType::UInt8 => "unsigned".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        other => other.to_string().to_lowercase(),
    }
}

fn column_values(array: &ArrayRef) -> Vec<Value> {
    let n = array.len();
    let valid = |i: usize| array.is_valid(i);
    macro_rules! prim {
        ($t:ty, $conv:expr) => {{
            let a = array.as_primitive::<$t>();
            (0..n).map(|i| if valid(i) { $conv(a.value(i)) } else { Value::Null }).collect()
        }};
    }
    match array.data_type() {
        DataType::Float64 => prim!(Float64Type, |v: f64| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)),
        DataType::Float32 => {
            prim!(Float32Type, |v: f32| serde_json::Number::from_f64(v as f64).map_or(Value::Null, Value::Number))
        }
        DataType::Int64 => prim!(Int64Type, |v: i64| json!(v)),
        DataType::Int32 => prim!(Int32Type, |v: i32| json!(v)),
        DataType::Int16 => prim!(Int16Type, |v: i16| json!(v)),
        DataType::Int8 => prim!(Int8Type, |v: i8| json!(v)),
        DataType::UInt64 => prim!(UInt64Type, |v: u64| json!(v)),
        DataType::UInt32 => prim!(UInt32Type, |v: u32| json!(v)),
        DataType::UInt16 => prim!(UInt16Type, |v: u16| json!(v)),
        DataType::UInt8 => prim!(UInt8Type, |v: u8| json!(v)),
        DataType::Boolean => {
            let a = array.as_boolean();
            (0..n).map(|i| if valid(i) { json!(a.value(i)) } else { Value::Null }).collect()
        }
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            (0..n).map(|i| if valid(i) { json!(a.value(i)) } else { Value::Null }).collect()
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            (0..n).map(|i| if valid(i) { json!(a.value(i)) } else { Value::Null }).collect()
        }
        DataType::Timestamp(unit, _) => {
            let cast = arrow::compute::cast(array, &DataType::Timestamp(TimeUnit::Nanosecond, None));
            match cast {
                Ok(ns) => {
                    let a = ns.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
                    (0..n).map(|i| if valid(i) { json!(rfc3339(a.value(i))) } else { Value::Null }).collect()
                }
                Err(_) => formatted(array, unit),
            }
        }
        _ => formatted(array, &TimeUnit::Second),
    }
}

/// RFC 3339 in UTC with as many fractional digits as the value needs (so what went in comes out).
pub fn rfc3339(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn formatted(array: &ArrayRef, _unit: &TimeUnit) -> Vec<Value> {
    let options = FormatOptions::default();
    match ArrayFormatter::try_new(array.as_ref(), &options) {
        Ok(f) => (0..array.len()).map(|i| if array.is_valid(i) { json!(f.value(i).to_string()) } else { Value::Null }).collect(),
        Err(_) => vec![Value::Null; array.len()],
    }
}

pub fn to_csv(result: &SqlResult) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.fZ".to_string())
            .build(&mut out);
        if result.batches.is_empty() {
            let empty = arrow::array::RecordBatch::new_empty(result.schema.clone());
            writer.write(&empty).map_err(|e| ApiError::bad_input(e.to_string()))?;
        }
        for batch in &result.batches {
            writer.write(batch).map_err(|e| ApiError::bad_input(format!("cannot render as CSV: {e}")))?;
        }
    }
    Ok(out)
}
