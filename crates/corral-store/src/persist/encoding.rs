//! How each column is laid out in Parquet, chosen per file from the data it holds.
//!
//! Sensor readings are decimals a device printed with a fixed number of digits (`21.5`,
//! `-8.64257`), and a device's consecutive readings are close to each other. Stored as IEEE
//! doubles, their low mantissa bytes look random and general-purpose compression gets little out
//! of them (about 5 bytes per value). So a `Float64` column whose every value is exactly
//! `n / 10^scale` for some small `scale` is written as a Parquet `DECIMAL(18, scale)` (an INT64 on
//! disk) with delta encoding: rows are sorted by device then time, so the deltas are small. The
//! conversion is exact both ways (checked value by value, bit for bit), and readers get `Float64`
//! back: the query engine casts to the table's type, [`to_table_types`] does it for compaction.
//!
//! Times are delta encoded too (a device reports at a steady interval), and a column with few
//! distinct values keeps Parquet's dictionary encoding.

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use parquet::basic::Encoding;
use parquet::file::properties::WriterPropertiesBuilder;
use parquet::schema::types::ColumnPath;
use std::collections::HashSet;
use std::sync::Arc;

/// Largest decimal scale tried. Beyond 9 digits a value is rarely a printed reading, and the
/// integers (with their deltas) stop being small.
const MAX_SCALE: i8 = 9;
/// Values whose integer form exceeds this are left as doubles: every integer below 2^53 converts
/// to `f64` exactly, which the exactness argument needs. Also fits DECIMAL(18, _).
const MAX_DECIMAL_INT: i64 = 1 << 53;
/// A column with at most this share of distinct values keeps dictionary encoding.
const DICTIONARY_MAX_DISTINCT_RATIO: usize = 8;

/// The batch as it is written to Parquet, and the writer settings its columns need.
pub fn for_file(batch: &RecordBatch, mut props: WriterPropertiesBuilder) -> (RecordBatch, WriterPropertiesBuilder) {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let path = ColumnPath::from(field.name().as_str());
        let (file_field, file_column) = match field.data_type() {
            DataType::Timestamp(..) => {
                props = delta(props, path);
                (field.as_ref().clone(), column.clone())
            }
            DataType::Float64 => match as_decimal(column) {
                Some(decimal) => {
                    props = integers(props, path, || decimal.iter().flatten().map(|v| v as i64));
                    let field = Field::new(field.name(), decimal.data_type().clone(), true);
                    (field, Arc::new(decimal) as ArrayRef)
                }
                None => {
                    let floats = column.as_primitive::<Float64Type>();
                    if !few_distinct(floats.values().iter().map(|v| v.to_bits() as i64), floats.len()) {
                        props = props
                            .set_column_dictionary_enabled(path.clone(), false)
                            .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
                    }
                    (field.as_ref().clone(), column.clone())
                }
            },
            DataType::Int64 => {
                let ints = column.as_primitive::<Int64Type>();
                props = integers(props, path, || ints.iter().flatten());
                (field.as_ref().clone(), column.clone())
            }
            _ => (field.as_ref().clone(), column.clone()),
        };
        fields.push(file_field);
        columns.push(file_column);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema, columns).expect("converted columns keep their length");
    (batch, props)
}

/// Casts columns read from a file back to the table's types (decimal columns to `Float64`).
pub fn to_table_types(table: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(table.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                arrow::compute::cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fields: Vec<Field> = table.fields()[..columns.len()].iter().map(|f| f.as_ref().clone()).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Dictionary or delta encoding for an integer column, whichever would take fewer bits: a
/// slowly moving reading has small deltas even when it takes thousands of distinct values, a
/// status code has few values even when it jumps.
fn integers<I: Iterator<Item = i64>>(
    props: WriterPropertiesBuilder,
    path: ColumnPath,
    values: impl Fn() -> I,
) -> WriterPropertiesBuilder {
    match dictionary_bits(values()) {
        Some(bits) if bits <= delta_bits(values()) => props.set_column_dictionary_enabled(path, true),
        _ => delta(props, path),
    }
}

/// Bits DELTA_BINARY_PACKED spends: each miniblock of 32 deltas costs 32 times the bit width
/// of its largest delta minus its smallest.
fn delta_bits(values: impl Iterator<Item = i64>) -> u64 {
    let (mut total, mut previous, mut lo, mut hi, mut n) = (0u64, None, i64::MAX, i64::MIN, 0);
    for v in values {
        if let Some(p) = previous {
            let d = i64::wrapping_sub(v, p);
            (lo, hi, n) = (lo.min(d), hi.max(d), n + 1);
            if n == 32 {
                total += 32 * bit_width(hi.wrapping_sub(lo) as u64);
                (lo, hi, n) = (i64::MAX, i64::MIN, 0);
            }
        }
        previous = Some(v);
    }
    if n > 0 {
        total += 32 * bit_width(hi.wrapping_sub(lo) as u64);
    }
    total
}

/// Bits a dictionary encoding spends (indices plus the dictionary itself), or `None` when the
/// values are too varied for a dictionary to be worth it.
fn dictionary_bits(values: impl Iterator<Item = i64>) -> Option<u64> {
    let (mut seen, mut count) = (HashSet::new(), 0u64);
    for v in values {
        seen.insert(v);
        count += 1;
        if seen.len() > 64 * 1024 {
            return None;
        }
    }
    let distinct = seen.len() as u64;
    Some(count * bit_width(distinct.saturating_sub(1)) + distinct * 64)
}

fn bit_width(v: u64) -> u64 {
    (u64::BITS - v.leading_zeros()) as u64
}

fn delta(props: WriterPropertiesBuilder, path: ColumnPath) -> WriterPropertiesBuilder {
    props.set_column_dictionary_enabled(path.clone(), false).set_column_encoding(path, Encoding::DELTA_BINARY_PACKED)
}

fn few_distinct(values: impl Iterator<Item = i64>, len: usize) -> bool {
    let limit = len / DICTIONARY_MAX_DISTINCT_RATIO;
    let mut seen = HashSet::new();
    for v in values {
        if seen.insert(v) && seen.len() > limit {
            return false;
        }
    }
    true
}

/// The column as exact decimals with the smallest scale that holds every value, if there is one.
fn as_decimal(column: &ArrayRef) -> Option<Decimal128Array> {
    let floats = column.as_primitive::<Float64Type>();
    let present = || floats.iter().flatten();
    let scale = (0..=MAX_SCALE).find(|&scale| present().all(|v| decimal_int(v, scale).is_some()))?;
    let ints: Decimal128Array = floats.iter().map(|v| v.map(|v| decimal_int(v, scale).expect("checked") as i128)).collect();
    ints.with_precision_and_scale(18, scale).ok()
}

/// `v` as the integer `n` with `n / 10^scale == v` exactly, computed the way readers convert back
/// (arrow's decimal-to-float cast divides the integer, as `f64`, by `10f64.powi(scale)`).
fn decimal_int(v: f64, scale: i8) -> Option<i64> {
    let pow = 10f64.powi(scale as i32);
    let n = (v * pow).round();
    if !n.is_finite() || n.abs() >= MAX_DECIMAL_INT as f64 {
        return None;
    }
    let n = n as i64;
    ((n as f64 / pow).to_bits() == v.to_bits()).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, TimestampNanosecondArray};
    use parquet::file::properties::WriterProperties;

    fn batch(values: Vec<Option<f64>>) -> RecordBatch {
        let n = values.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None), false),
            Field::new("x", DataType::Float64, true),
        ]));
        let times = TimestampNanosecondArray::from((0..n as i64).collect::<Vec<_>>());
        RecordBatch::try_new(schema, vec![Arc::new(times), Arc::new(Float64Array::from(values))]).unwrap()
    }

    #[test]
    fn printed_decimals_become_exact_decimals_and_come_back_bit_for_bit() {
        let values: Vec<Option<f64>> =
            (0..1000).map(|i| Some(-8.64257 + i as f64 * 0.00001)).map(|v| v.map(|v: f64| (v * 1e5).round() / 1e5)).collect();
        let mut values = values;
        values[3] = None;
        values[4] = Some(0.1 + 0.2); // 0.30000000000000004 needs 17 digits: the column stays at scale <= 9 only if exact
        let original = batch(values.clone());
        let (file, _) = for_file(&original, WriterProperties::builder());
        // 0.1 + 0.2 is not exactly any n / 10^k with k <= 9, so the column stays a double.
        assert_eq!(file.column(1).data_type(), &DataType::Float64);

        values[4] = Some(-0.5);
        let original = batch(values);
        let (file, _) = for_file(&original, WriterProperties::builder());
        assert!(matches!(file.column(1).data_type(), DataType::Decimal128(18, 5)), "{:?}", file.column(1).data_type());
        let back = to_table_types(&original.schema(), &file).unwrap();
        let (a, b) = (original.column(1).as_primitive::<Float64Type>(), back.column(1).as_primitive::<Float64Type>());
        assert_eq!(a.nulls(), b.nulls());
        for i in 0..a.len() {
            assert_eq!(a.value(i).to_bits(), b.value(i).to_bits(), "row {i}");
        }
    }

    #[test]
    fn values_that_are_not_exact_decimals_stay_doubles() {
        for odd in [f64::NAN, f64::INFINITY, -0.0, 1e300, 1.0 / 3.0, 9_007_199_254_740_993.0] {
            let (file, _) = for_file(&batch(vec![Some(1.5), Some(odd)]), WriterProperties::builder());
            assert_eq!(file.column(1).data_type(), &DataType::Float64, "{odd}");
        }
    }

    #[test]
    fn smooth_readings_get_deltas_and_codes_get_a_dictionary() {
        let smooth: Vec<i64> = (0..10_000).map(|i| 1_000_000 + (i % 50) * 3 + i * 7).collect();
        assert!(dictionary_bits(smooth.iter().copied()).unwrap() > delta_bits(smooth.iter().copied()));
        let codes: Vec<i64> = (0..10_000).map(|i| [0, 4, 1, 3][(i * 7919) % 4]).collect();
        assert!(dictionary_bits(codes.iter().copied()).unwrap() < delta_bits(codes.iter().copied()));
    }

    #[test]
    fn smallest_scale_is_chosen() {
        assert_eq!(decimal_int(21.5, 0), None);
        assert_eq!(decimal_int(21.5, 1), Some(215));
        let (file, _) = for_file(&batch(vec![Some(21.5), Some(3.0), Some(-0.25)]), WriterProperties::builder());
        assert_eq!(file.column(1).data_type(), &DataType::Decimal128(18, 2));
    }
}
