//! Idempotent writes: a point is identified by its table, device, tag set and time, as in
//! InfluxDB, and a second write of the same point overwrites the first (field by field: a
//! field the second write leaves out keeps its value). Clients retry on timeouts and rely on it.
//!
//! Finding the older version of a point on every write would cost a lookup in the buffer and in
//! Parquet per row. Instead the write path only notices rows that *may* repeat a point
//! ([`PointIndex`]) and marks their UTC day dirty; dirty days are merged where they are read:
//!
//! - a query merges the write buffer and the dirty days' files ([`last_write_wins`]) before
//!   anything else sees the rows (`sql.rs`);
//! - a snapshot merges a dirty buffer before it writes Parquet, so no file holds two versions,
//!   and checks the suspects against the key columns of the day's files
//!   ([`days_with_repeats`]): a day where nothing actually repeats is clean again at once;
//! - compaction rewrites each day where a point did repeat as one merged file, and the day is
//!   clean again.
//!
//! Rows that cannot repeat a point — the usual case, each series' time moving forward — cost
//! one hash lookup and leave no day dirty.

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};
use corral_model::Row;
use std::hash::BuildHasher;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Times remembered per series: a row at most this many points older than its series' newest
/// is still told apart exactly (readings that arrive a little out of order are common).
const KEEP: usize = 8;

/// Series tracked before the index starts over (it then treats every earlier time as possibly
/// written, which is safe, and forgets the rest).
const MAX_SERIES: usize = 2_000_000;

/// The newest times written per series (device and tag set) of one table since tracking began.
#[derive(Default)]
pub struct PointIndex {
    series: HashMap<u64, Recent>,
    /// Per device, the newest time stored before tracking began: nothing older is known.
    floors: HashMap<String, i64>,
    hasher: foldhash::fast::RandomState,
}

/// The up to [`KEEP`] newest distinct times of one series, and `floor`: every time this series
/// wrote that is newer than `floor` is in `known`.
struct Recent {
    known: [i64; KEEP],
    len: u8,
    floor: i64,
}

impl PointIndex {
    /// Starts knowing only each device's newest stored time (from the latest rows at start).
    pub fn with_floors(floors: impl IntoIterator<Item = (String, i64)>) -> Self {
        PointIndex { floors: floors.into_iter().collect(), ..Default::default() }
    }

    /// Whether `row` may repeat a point already written: certainly not when it is newer than
    /// everything its series wrote, or an out-of-order time its series has not used.
    pub fn may_repeat(&mut self, row: &Row) -> bool {
        let key = self.series_key(row);
        let recent = match self.series.get_mut(&key) {
            Some(recent) => recent,
            None => {
                let floor = self.floors.get(row.device.as_str()).copied().unwrap_or(i64::MIN);
                self.series.entry(key).or_insert(Recent { known: [0; KEEP], len: 0, floor })
            }
        };
        recent.note(row.time_ns)
    }

    /// Forgets the series when there are too many, keeping what is safe: `newest` gives each
    /// device's newest time, below which everything counts as possibly written.
    pub fn bound(&mut self, newest: impl FnOnce() -> Vec<(String, i64)>) {
        if self.series.len() > MAX_SERIES {
            self.series = HashMap::default();
            self.floors = newest().into_iter().collect();
        }
    }

    /// Device and tag set, the tags in any order. Two series that share a key only make more
    /// rows look like possible repeats, never fewer.
    fn series_key(&self, row: &Row) -> u64 {
        let mut key = self.hasher.hash_one(row.device.as_str());
        for (name, value) in &row.tags {
            key = key.wrapping_add(self.hasher.hash_one((name.as_str(), value.as_str())));
        }
        key
    }
}

impl Recent {
    /// Records `time`; true if the series may have written it before.
    fn note(&mut self, time: i64) -> bool {
        if time <= self.floor {
            return true; // older than what is remembered: cannot tell
        }
        let known = &mut self.known[..self.len as usize];
        match known.binary_search(&time) {
            Ok(_) => true,
            Err(at) => {
                if (self.len as usize) < KEEP {
                    self.known.copy_within(at..self.len as usize, at + 1);
                    self.known[at] = time;
                    self.len += 1;
                } else if at == 0 {
                    // Older than all it remembers, yet newer than the floor: new, and it
                    // becomes the floor (the newer times are still all in `known`).
                    self.floor = time;
                } else {
                    // The oldest goes and becomes the floor; `time` takes its place in order.
                    self.floor = self.known[0];
                    self.known.copy_within(1..at, 0);
                    self.known[at - 1] = time;
                }
                false
            }
        }
    }
}

/// Merges the versions of each point in `batch`, whose rows are in the order they were written:
/// one row per distinct value of the `keys` columns, each other column holding the last value
/// written to it (a later write's null leaves an earlier value). Returns the batch itself when
/// no point repeats.
pub fn last_write_wins(batch: &RecordBatch, keys: &[usize]) -> Result<RecordBatch, ArrowError> {
    let n = batch.num_rows();
    if n < 2 || !any_key_repeats(batch, keys)? {
        return Ok(batch.clone());
    }
    let fields = keys.iter().map(|&k| SortField::new(batch.schema().field(k).data_type().clone())).collect();
    let converter = RowConverter::new(fields)?;
    let key_columns: Vec<ArrayRef> = keys.iter().map(|&k| batch.column(k).clone()).collect();
    let rows = converter.convert_columns(&key_columns)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Stable: the versions of a point stay in write order.
    order.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for i in 1..=n {
        if i == n || rows.row(order[i] as usize) != rows.row(order[start] as usize) {
            runs.push((start, i));
            start = i;
        }
    }
    if runs.len() == n {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            // Per point, the last version with a value in this column (or the last version).
            let picks: UInt32Array = runs
                .iter()
                .map(|&(start, end)| {
                    let run = &order[start..end];
                    Some(run.iter().rev().copied().find(|&r| column.is_valid(r as usize)).unwrap_or(run[run.len() - 1]))
                })
                .collect();
            take(column.as_ref(), &picks, None)
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

/// Of the `suspects` days (where a row of `batch` may repeat a stored point), those where one
/// does: a row of `batch` (already merged within itself) shares its key with a row of the day's
/// `files`. Only the key columns of those files are read. A snapshot keeps only these days
/// dirty, so a day whose rows merely arrived out of order is read as it is.
pub fn days_with_repeats(
    dir: &std::path::Path,
    batch: &RecordBatch,
    keys: &[usize],
    files: &[crate::FileMeta],
    suspects: &std::collections::BTreeSet<i64>,
) -> std::io::Result<std::collections::BTreeSet<i64>> {
    use crate::persist::NANOS_PER_DAY;
    use arrow::array::{AsArray, BooleanArray};
    use arrow::datatypes::TimestampNanosecondType;
    let table = batch.schema();
    let key_rows = batch.project(keys).map_err(std::io::Error::other)?;
    let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
    let mut dirty = std::collections::BTreeSet::new();
    for &day in suspects {
        let of_day: Vec<&crate::FileMeta> = files.iter().filter(|f| f.min_time_ns.div_euclid(NANOS_PER_DAY) == day).collect();
        if of_day.is_empty() {
            continue; // nothing stored that day before this snapshot
        }
        let in_day: BooleanArray = times.values().iter().map(|t| Some(t.div_euclid(NANOS_PER_DAY) == day)).collect();
        let mut parts = vec![arrow::compute::filter_record_batch(&key_rows, &in_day).map_err(std::io::Error::other)?];
        for file in of_day {
            parts.extend(crate::persist::read_columns(&dir.join(&file.path), &table, keys)?);
        }
        let all = arrow::compute::concat_batches(&key_rows.schema(), &parts).map_err(std::io::Error::other)?;
        if any_key_repeats(&all, &(0..keys.len()).collect::<Vec<_>>()).map_err(std::io::Error::other)? {
            dirty.insert(day);
        }
    }
    Ok(dirty)
}

/// Whether two rows may share a key: a hash per row, sorted. No repeated hash means no repeated
/// point, which is the usual answer (a day marked dirty by a row that only *might* repeat one),
/// found in a fraction of what sorting the rows by key costs, and without copying them.
fn any_key_repeats(batch: &RecordBatch, keys: &[usize]) -> Result<bool, ArrowError> {
    use datafusion::common::hash_utils::{RandomState, create_hashes};
    let mut hashes = vec![0u64; batch.num_rows()];
    let columns: Vec<&ArrayRef> = keys.iter().map(|&k| batch.column(k)).collect();
    create_hashes(columns, &RandomState::with_seed(0), &mut hashes).map_err(|e| ArrowError::ComputeError(e.to_string()))?;
    hashes.sort_unstable();
    Ok(hashes.windows(2).any(|pair| pair[0] == pair[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn row(device: &str, time: i64) -> Row {
        Row::new(time, device)
    }

    #[test]
    fn in_order_and_out_of_order_new_times_are_not_repeats() {
        let mut index = PointIndex::default();
        for t in [10, 20, 30, 25, 40, 15] {
            assert!(!index.may_repeat(&row("d", t)), "{t}");
        }
        for t in [10, 25, 40] {
            assert!(index.may_repeat(&row("d", t)), "{t}");
        }
        assert!(!index.may_repeat(&row("other", 40)), "another device's series");
        let tagged = row("d", 40).tag("cpu", "cpu1");
        assert!(!index.may_repeat(&tagged), "another tag set of the same device");
        assert!(index.may_repeat(&row("d", 40).tag("cpu", "cpu1")));
    }

    #[test]
    fn times_older_than_what_is_remembered_count_as_possible_repeats() {
        let mut index = PointIndex::default();
        for t in 0..100 {
            assert!(!index.may_repeat(&row("d", t * 10)));
        }
        // The last KEEP times are remembered exactly.
        assert!(!index.may_repeat(&row("d", 985)));
        assert!(index.may_repeat(&row("d", 990)));
        // Older ones cannot be told apart: safe side.
        assert!(index.may_repeat(&row("d", 5)));
        let mut restarted = PointIndex::with_floors([("d".to_string(), 990)]);
        assert!(restarted.may_repeat(&row("d", 990)));
        assert!(!restarted.may_repeat(&row("d", 991)));
    }

    #[test]
    fn tag_order_does_not_change_the_series() {
        let mut index = PointIndex::default();
        assert!(!index.may_repeat(&row("d", 1).tag("a", "1").tag("b", "2")));
        assert!(index.may_repeat(&row("d", 1).tag("b", "2").tag("a", "1")));
    }

    #[test]
    fn the_last_write_of_each_field_wins() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", DataType::Int64, false),
            Field::new("device", DataType::Utf8, false),
            Field::new("x", DataType::Float64, true),
            Field::new("y", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 1, 1])),
                Arc::new(StringArray::from(vec!["a", "a", "a", "b"])),
                Arc::new(Float64Array::from(vec![Some(1.0), Some(2.0), Some(3.0), Some(9.0)])),
                Arc::new(Float64Array::from(vec![Some(10.0), None, None, None])),
            ],
        )
        .unwrap();
        let merged = last_write_wins(&batch, &[0, 1]).unwrap();
        assert_eq!(merged.num_rows(), 3);
        let x = merged.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        let y = merged.column(3).as_any().downcast_ref::<Float64Array>().unwrap();
        // (a, 1): x from the second version, y kept from the first.
        assert_eq!((x.value(0), y.value(0)), (3.0, 10.0));
        // Then in key order: (1, b), (2, a).
        assert_eq!((x.value(1), x.value(2)), (9.0, 2.0));
        let unique = batch.slice(1, 3);
        assert_eq!(last_write_wins(&unique, &[0, 1]).unwrap(), unique, "nothing repeats: unchanged");
    }
}
