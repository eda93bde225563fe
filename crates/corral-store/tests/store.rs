//! The store on its own: write → query (buffer) → persist → reopen → query (Parquet + buffer),
//! schema evolution across files, and persistence crash windows.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use async_trait::async_trait;
use corral_model::WireError;
use corral_model::{Batch, FieldValue, Row, TableName};
use corral_services::SystemTable;
use corral_store::{QueryEngine, Store, StoreConfig, SystemTables};
use std::sync::Arc;

struct Sites;

#[async_trait]
impl SystemTable for Sites {
    fn name(&self) -> &'static str {
        "devices"
    }

    async fn scan(&self, tenant: Option<&str>) -> Result<RecordBatch, WireError> {
        let all = [("d1", "north", "t1"), ("d2", "south", "t2")];
        let rows: Vec<_> = all.iter().filter(|(_, _, t)| tenant.is_none_or(|x| x == *t)).collect();
        let schema =
            Arc::new(Schema::new(vec![Field::new("device", DataType::Utf8, false), Field::new("site", DataType::Utf8, false)]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(arrow::array::StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .map_err(|e| WireError::internal(e.to_string()))
    }
}

fn sites() -> SystemTables {
    SystemTables::new(vec![Arc::new(Sites)]).unwrap()
}

fn batch(table: &str, rows: Vec<Row>) -> Batch {
    Batch { table: TableName::new(table).unwrap(), rows }
}

async fn sql(store: &Store, query: &str, tenant: Option<&str>) -> String {
    let engine = QueryEngine::new(store.clone(), sites(), 256 << 20).unwrap();
    let out = engine.query(query, tenant, 1000).await.unwrap();
    pretty_format_batches(&out.batches).unwrap().to_string()
}

const DAY: i64 = 86_400_000_000_000;

#[tokio::test]
async fn buffer_and_parquet_answer_together_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    store
        .write(vec![batch(
            "t",
            vec![
                Row::new(0, "d1").field("a", FieldValue::Float(1.0)),
                Row::new(DAY + 1, "d2").field("a", FieldValue::Float(2.0)),
            ],
        )])
        .await
        .unwrap();
    assert_eq!(store.persist().await.unwrap(), 2, "one file per UTC day");
    // A column added after the first files exist.
    store.write(vec![batch("t", vec![Row::new(5, "d1").field("b", FieldValue::Str("x".into()))])]).await.unwrap();
    let expected = sql(&store, "SELECT device, a, b FROM t ORDER BY time", None).await;
    assert!(expected.contains("| d1     | 1.0 |   |") && expected.contains("| d1     |     | x |"), "{expected}");
    drop(store);

    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(sql(&store, "SELECT device, a, b FROM t ORDER BY time", None).await, expected);
    let joined =
        sql(&store, "SELECT d.site, count(*) AS n FROM t JOIN devices d USING (device) GROUP BY d.site ORDER BY d.site", None)
            .await;
    assert!(joined.contains("| north | 2 |") && joined.contains("| south | 1 |"), "{joined}");
    let scoped = sql(&store, "SELECT device, a FROM t ORDER BY time", Some("t2")).await;
    assert!(scoped.contains("d2") && !scoped.contains("d1"), "{scoped}");
    store.persist().await.unwrap();
    drop(store);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(sql(&store, "SELECT device, a, b FROM t ORDER BY time", None).await, expected);
}

#[tokio::test]
async fn a_snapshot_that_crashed_before_commit_is_replayed_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    store.write(vec![batch("t", vec![Row::new(1, "d1").field("a", FieldValue::Float(1.0))])]).await.unwrap();
    store.persist().await.unwrap();
    store.write(vec![batch("t", vec![Row::new(2, "d1").field("a", FieldValue::Float(2.0))])]).await.unwrap();
    drop(store);
    // An orphan Parquet file (written, never committed) must be removed, not read.
    let orphan = dir.path().join("tables/t/1970-01-01/9999999999999999.parquet");
    std::fs::write(&orphan, b"PAR1 not really").unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert!(!orphan.exists());
    let out = sql(&store, "SELECT count(*) AS n, sum(a) AS s FROM t", None).await;
    assert!(out.contains("| 2 | 3.0 |"), "{out}");
}

#[tokio::test]
async fn type_conflicts_store_nothing_of_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    store.write(vec![batch("t", vec![Row::new(1, "d1").field("a", FieldValue::Float(1.0))])]).await.unwrap();
    let err = store
        .write(vec![
            batch("u", vec![Row::new(1, "d1").field("z", FieldValue::Float(1.0))]),
            batch("t", vec![Row::new(2, "d1").field("a", FieldValue::Bool(true))]),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"a\""), "{err}");
    assert!(store.snapshot_table("u").is_none(), "a refused request created a table");
    let out = sql(&store, "SELECT count(*) AS n FROM t", None).await;
    assert!(out.contains("| 1 |"), "{out}");
}

#[tokio::test]
async fn at_the_ceiling_writers_wait_then_get_a_retryable_error_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.buffer_ceiling_bytes = 2000;
    config.persist_bytes = usize::MAX; // no background persister runs in this test anyway
    config.backpressure_wait = std::time::Duration::from_millis(200);
    let store = Store::open(config).unwrap();
    let rows = |from: i64| (from..from + 100).map(|i| Row::new(i, "d1").field("a", FieldValue::Float(i as f64))).collect();
    store.write(vec![batch("t", rows(0))]).await.unwrap(); // crosses the ceiling
    let err = store.write(vec![batch("t", rows(100))]).await.unwrap_err();
    assert!(err.to_wire().kind == corral_model::ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("ceiling"), "{err}");
    // A writer waiting at the ceiling proceeds as soon as a snapshot frees memory.
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.write(vec![batch("t", rows(200))]).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    store.persist().await.unwrap();
    waiting.await.unwrap().unwrap();
    let out = sql(&store, "SELECT count(*) AS n FROM t", None).await;
    assert!(out.contains("| 200 |"), "{out}");
}

#[tokio::test]
async fn compaction_merges_a_days_files_into_one_and_answers_stay_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.compact_min_files = 3;
    config.retired_grace = std::time::Duration::ZERO;
    let store = Store::open(config.clone()).unwrap();
    for i in 0..4i64 {
        let mut row = Row::new(i * 1000, format!("d{}", i % 2 + 1)).field("a", FieldValue::Float(i as f64));
        if i == 3 {
            row = row.field("b", FieldValue::Str("late column".into())); // only in the newest file
        }
        store.write(vec![batch("t", vec![row])]).await.unwrap();
        store.persist().await.unwrap();
    }
    let parquet_files = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("tables/t/1970-01-01"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "parquet")
            .count()
    };
    assert_eq!(parquet_files(dir.path()), 4);
    let before = sql(&store, "SELECT time, device, a, b FROM t ORDER BY time", None).await;
    assert_eq!(store.compact().await.unwrap(), 4);
    assert_eq!(sql(&store, "SELECT time, device, a, b FROM t ORDER BY time", None).await, before);
    store.remove_retired();
    assert_eq!(parquet_files(dir.path()), 1);
    assert_eq!(store.compact().await.unwrap(), 0, "nothing left to compact");
    drop(store);
    let store = Store::open(config).unwrap();
    assert_eq!(sql(&store, "SELECT time, device, a, b FROM t ORDER BY time", None).await, before);
}

/// Floats persist as exact decimals where they can (see `persist/encoding.rs`); SQL must see the
/// same doubles, bit for bit, whether a value sits in the buffer or in a file, and filters on those
/// columns must prune nothing they should keep.
#[tokio::test]
async fn decimal_encoded_floats_answer_exactly_like_buffered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let values = [-8.64257, 21.5, 0.1 + 0.2, 1e-9, 123456789.125, 3.0];
    let rows = |offset: i64| -> Vec<Row> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                // `x`: every value an exact decimal; `y`: one value that is not (stays a double).
                let y = if i == 2 { *v } else { v * 2.0 };
                Row::new(offset + i as i64, "d1")
                    .field("x", FieldValue::Float(if i == 2 { 0.3 } else { *v }))
                    .field("y", FieldValue::Float(y))
            })
            .collect()
    };
    store.write(vec![batch("t", rows(0))]).await.unwrap();
    let query = "SELECT time, x, y, x > 21 AS big FROM t ORDER BY time";
    let buffered = sql(&store, query, None).await;
    store.persist().await.unwrap();
    store.write(vec![batch("t", rows(100))]).await.unwrap(); // one file + buffer
    let engine = QueryEngine::new(store.clone(), sites(), 256 << 20).unwrap();
    let out = engine.query("SELECT x, y FROM t WHERE CAST(time AS BIGINT) < 100 ORDER BY time", None, 100).await.unwrap();
    let xs = out.batches[0].column(0).as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
    let ys = out.batches[0].column(1).as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
    for (i, v) in values.iter().enumerate() {
        let x = if i == 2 { 0.3 } else { *v };
        let y = if i == 2 { *v } else { v * 2.0 };
        assert_eq!(xs.value(i).to_bits(), x.to_bits(), "x row {i}");
        assert_eq!(ys.value(i).to_bits(), y.to_bits(), "y row {i}");
    }
    let both = sql(&store, "SELECT time, x, y, x > 21 AS big FROM t WHERE CAST(time AS BIGINT) < 100 ORDER BY time", None).await;
    assert_eq!(both, buffered);
    let filtered = sql(&store, "SELECT count(*) AS n FROM t WHERE x = -8.64257 OR x > 1000000", None).await;
    assert!(filtered.contains("| 4 |"), "{filtered}");
    let summed =
        sql(&store, "SELECT abs(sum(x) - 2 * (-8.64257 + 21.5 + 0.3 + 1e-9 + 123456789.125 + 3.0)) < 1e-6 AS same FROM t", None)
            .await;
    assert!(summed.contains("true"), "{summed}");
}

/// `latest.<table>` equals `DISTINCT ON (device) ... ORDER BY device, time DESC` over the history,
/// whether the rows are buffered, persisted, or replayed after a restart, and stays tenant-scoped.
#[tokio::test]
async fn latest_rows_match_the_history_across_persist_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let reading = |t: i64, d: &str, v: f64| Row::new(t, d).field("v", FieldValue::Float(v));
    let history = "SELECT DISTINCT ON (device) device, time, v, w FROM t ORDER BY device, time DESC";
    let latest = "SELECT device, time, v, w FROM latest.t ORDER BY device";
    store.write(vec![batch("t", vec![reading(10, "d1", 1.0), reading(30, "d1", 3.0), reading(20, "d2", 2.0)])]).await.unwrap();
    let (history_v, latest_v) = (history.replace(", w", ""), latest.replace(", w", ""));
    assert_eq!(sql(&store, &latest_v, None).await, sql(&store, &history_v, None).await);
    store.persist().await.unwrap();
    // Out of order for d1 (older than what is persisted), newer for d2 with a new column.
    store
        .write(vec![batch("t", vec![reading(5, "d1", 0.5), reading(40, "d2", 4.0).field("w", FieldValue::Int(7))])])
        .await
        .unwrap();
    let expected = sql(&store, history, None).await;
    assert!(expected.contains("| d1     | 1970-01-01T00:00:00.000000030Z | 3.0 |   |"), "{expected}");
    assert_eq!(sql(&store, latest, None).await, expected);
    drop(store); // the second write is only in the WAL
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(sql(&store, latest, None).await, expected);
    store.persist().await.unwrap();
    drop(store);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(sql(&store, latest, None).await, expected);
    let scoped = sql(&store, "SELECT device FROM latest.t", Some("t2")).await;
    assert!(scoped.contains("d2") && !scoped.contains("d1"), "{scoped}");
    let latest_files = std::fs::read_dir(dir.path().join("tables/t/latest")).unwrap().count();
    assert_eq!(latest_files, 1, "a snapshot replaces the previous latest file");
}

/// Many small concurrent writes share WAL records (write groups) and every one of them is stored
/// exactly once, durable when its call returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_writes_share_wal_records_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let writes = 300i64;
    let tasks: Vec<_> = (0..writes)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let row = Row::new(i, format!("d{}", i % 7)).field("seq", FieldValue::Int(i));
                store.write(vec![batch("t", vec![row])]).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let appends = store.metrics().wal.appends;
    assert!(appends < writes as u64, "{appends} WAL records for {writes} writes: no grouping");
    let counted = sql(&store, "SELECT count(*) AS n, count(DISTINCT seq) AS d FROM t", None).await;
    assert!(counted.contains("| 300 | 300 |"), "{counted}");
    drop(store);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap(); // replayed from the WAL
    assert_eq!(sql(&store, "SELECT count(*) AS n, count(DISTINCT seq) AS d FROM t", None).await, counted);
}

/// A point is (table, device, tag set, time): writing it again overwrites it field by field,
/// whether the first version sits in the buffer, in a Parquet file, or both, and after
/// compaction and a restart; a filter on a replaced value never sees the old version.
#[tokio::test]
async fn a_repeated_point_overwrites_the_first_in_buffer_files_compaction_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.retired_grace = std::time::Duration::ZERO;
    let store = Store::open(config.clone()).unwrap();
    let point = |t: i64, cpu: &str, usage: f64| Row::new(t, "host-1").tag("cpu", cpu).field("usage", FieldValue::Float(usage));
    let query = "SELECT time, cpu, usage, idle FROM t ORDER BY time, cpu";
    // Two series at the same time are two points.
    store.write(vec![batch("t", vec![point(10, "cpu0", 1.0), point(10, "cpu1", 2.0), point(20, "cpu0", 3.0)])]).await.unwrap();
    store.write(vec![batch("t", vec![point(10, "cpu0", 1.5).field("idle", FieldValue::Float(98.5))])]).await.unwrap();
    let once = sql(&store, query, None).await;
    let expected = [
        "| 1970-01-01T00:00:00.000000010Z | cpu0 | 1.5   | 98.5 |",
        "| 1970-01-01T00:00:00.000000010Z | cpu1 | 2.0   |      |",
        "| 1970-01-01T00:00:00.000000020Z | cpu0 | 3.0   |      |",
    ];
    for line in expected {
        assert!(once.contains(line), "{line}\n{once}");
    }
    assert_eq!(once.lines().count(), 7, "three rows:\n{once}");
    let filtered = sql(&store, "SELECT count(*) AS n FROM t WHERE usage = 1.0", None).await;
    assert!(filtered.contains("| 0 |"), "the replaced version is gone:\n{filtered}");

    // The first version in a file, the second (only `idle`) in the buffer.
    store.persist().await.unwrap();
    store
        .write(vec![batch("t", vec![Row::new(20, "host-1").tag("cpu", "cpu0").field("idle", FieldValue::Float(50.0))])])
        .await
        .unwrap();
    let merged = sql(&store, query, None).await;
    assert!(merged.contains("| 1970-01-01T00:00:00.000000020Z | cpu0 | 3.0   | 50.0 |"), "{merged}");
    assert_eq!(merged.lines().count(), 7, "{merged}");
    // Two files for the day now: compaction merges them and the day is clean again.
    store.persist().await.unwrap();
    assert_eq!(sql(&store, query, None).await, merged);
    assert!(store.compact().await.unwrap() >= 2);
    assert_eq!(sql(&store, query, None).await, merged);
    let manifest = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    assert!(!manifest.contains("dirty_days"), "{manifest}");
    drop(store);

    // After a restart the index knows only each device's newest time, so an older point written
    // again still counts as possibly repeated, and is merged.
    let store = Store::open(config).unwrap();
    assert_eq!(sql(&store, query, None).await, merged);
    store.write(vec![batch("t", vec![point(10, "cpu1", 7.0)])]).await.unwrap();
    let again = sql(&store, query, None).await;
    assert!(again.contains("| 1970-01-01T00:00:00.000000010Z | cpu1 | 7.0   |      |"), "{again}");
    assert_eq!(again.lines().count(), 7, "{again}");
    let latest = sql(&store, "SELECT usage, idle FROM latest.t", None).await;
    assert!(latest.contains("| 3.0   | 50.0 |"), "the latest row merged too:\n{latest}");
}

/// Readings that arrive a little out of order (as the fleet benchmark's do) are new points: they
/// leave no day dirty, so queries read files as they are. Older ones are checked against the
/// day's files when the buffer is written; only a real repeat keeps the day dirty.
#[tokio::test]
async fn out_of_order_readings_are_not_taken_for_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let mut rows = Vec::new();
    for step in 0..300i64 {
        for device in 0..20 {
            rows.push(Row::new(step * 10_000_000_000, format!("truck-{device}")).field("speed", FieldValue::Float(step as f64)));
        }
    }
    // Every 7th row swaps with the row of the same device four steps later.
    for i in (0..rows.len() - 80).step_by(7) {
        rows.swap(i, i + 80);
    }
    for chunk in rows.chunks(500) {
        store.write(vec![batch("t", chunk.to_vec())]).await.unwrap();
    }
    assert!(store.snapshot_table("t").unwrap().dirty_days.is_empty());
    store.persist().await.unwrap();
    // Readings from long ago, never written (a late backfill): possible repeats until the
    // snapshot checks them against the day's files; then the day is clean.
    let late: Vec<Row> =
        (0..50i64).map(|i| Row::new(i * 10_000_000_000 + 5, "truck-0").field("speed", FieldValue::Float(0.5))).collect();
    store.write(vec![batch("t", late)]).await.unwrap();
    assert_eq!(store.snapshot_table("t").unwrap().dirty_days.len(), 1, "older than what is remembered");
    store.persist().await.unwrap();
    assert!(store.snapshot_table("t").unwrap().dirty_days.is_empty(), "checked against the files: nothing repeats");
    store.write(vec![batch("t", vec![rows[100].clone()])]).await.unwrap();
    assert_eq!(store.snapshot_table("t").unwrap().dirty_days.len(), 1, "a repeated point marks its day");
    store.persist().await.unwrap();
    assert_eq!(store.snapshot_table("t").unwrap().dirty_days.len(), 1, "a real repeat keeps its day dirty");
    let n = sql(&store, "SELECT count(*) AS n FROM t", None).await;
    assert!(n.contains("| 6050 |"), "{n}");
}
