//! Scheduled exports against a real store and SQL engine, into a local folder, with a manual
//! clock: the first run, what later runs add, failures, retries with backoff and the alarm.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use corral_exports::{ExportBook, ExportSettings, ExportSpec, Exports, Format};
use corral_model::{Batch, FieldValue, Row, TableName, WireError};
use corral_services::{ManualClock, PlatformAlarms, SqlService, SystemTable};
use corral_store::{QueryEngine, Store, StoreConfig, SystemTables};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DAY: i64 = 86_400_000_000_000;
const HOUR: i64 = 3_600_000_000_000;
/// 2026-12-01T00:00:00Z.
const NOW: i64 = 1_796_083_200 * 1_000_000_000;

struct Devices;

#[async_trait]
impl SystemTable for Devices {
    fn name(&self) -> &'static str {
        "devices"
    }

    async fn scan(&self, _tenant: Option<&str>) -> Result<RecordBatch, WireError> {
        let schema = Arc::new(Schema::new(vec![Field::new("device", DataType::Utf8, false)]));
        let ids = arrow::array::StringArray::from_iter_values(["d1", "d2"]);
        RecordBatch::try_new(schema, vec![Arc::new(ids)]).map_err(|e| WireError::internal(e.to_string()))
    }
}

/// The alarms raised and cleared, in order.
#[derive(Default)]
struct Board(Mutex<Vec<String>>);

#[async_trait]
impl PlatformAlarms for Board {
    async fn raise(&self, key: &str, _tenant: Option<&str>, _title: &str, message: &str) {
        self.0.lock().unwrap().push(format!("raise {key}: {message}"));
    }

    async fn clear(&self, key: &str) {
        self.0.lock().unwrap().push(format!("clear {key}"));
    }
}

struct World {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    store: Store,
    exports: Exports,
    clock: ManualClock,
    board: Arc<Board>,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let store = Store::open(StoreConfig::new(data.join("store"))).unwrap();
    let engine = QueryEngine::new(store.clone(), SystemTables::new(vec![Arc::new(Devices)]).unwrap(), 256 << 20).unwrap();
    let sql: Arc<dyn SqlService> = Arc::new(engine);
    let clock = ManualClock::at(NOW);
    let board = Arc::new(Board::default());
    let settings = ExportSettings { retry_secs: 10, alarm_after_failures: 2, ..Default::default() };
    let exports = Exports::open(&data, settings, sql, board.clone(), Arc::new(clock.clone())).unwrap();
    World { _dir: dir, data, store, exports, clock, board }
}

async fn write(store: &Store, rows: Vec<Row>) {
    store.write(vec![Batch { table: TableName::new("t").unwrap(), rows }]).await.unwrap();
}

fn reading(time_ns: i64, device: &str, v: f64) -> Row {
    Row::new(time_ns, device).field("v", FieldValue::Float(v))
}

fn spec(name: &str) -> ExportSpec {
    ExportSpec {
        name: name.into(),
        table: Some("t".into()),
        sql: None,
        format: Format::Parquet,
        destination: "lake/t".into(),
        every: "1h".into(),
        delay: Some("1m".into()),
        from: None,
    }
}

/// Every row in the export's files, as (time, device, v), read back from Parquet.
fn rows_in(folder: &std::path::Path) -> Vec<(i64, String, f64)> {
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    let mut rows = Vec::new();
    for file in manifest["files"].as_array().unwrap() {
        let before = rows.len();
        let path = folder.join(file["path"].as_str().unwrap());
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            use arrow::array::AsArray;
            let times = batch.column(0).as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            let devices = batch.column(1).as_string::<i32>();
            let values = batch.column(2).as_primitive::<arrow::datatypes::Float64Type>();
            for i in 0..batch.num_rows() {
                rows.push((times.value(i), devices.value(i).to_string(), values.value(i)));
            }
        }
        assert_eq!(file["rows"].as_u64().unwrap() as usize, rows.len() - before, "the manifest counts the file's rows: {file}");
    }
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

#[tokio::test]
async fn each_run_exports_what_is_new_one_file_per_day_and_lists_it() {
    let w = world();
    // Two days of history, and one row too recent for the first run (inside its delay).
    let history =
        vec![reading(NOW - 2 * DAY, "d1", 1.0), reading(NOW - DAY + HOUR, "d2", 2.0), reading(NOW - 30_000_000_000, "d1", 3.0)];
    write(&w.store, history).await;
    let created = w.exports.create(spec("daily"), None, "alice").await.unwrap();
    assert!(created.exported_through.is_none());

    assert_eq!(w.exports.run_due().await, 1, "a new export runs at once");
    let folder = w.data.join("exports/lake/t/daily");
    assert_eq!(rows_in(&folder), vec![(NOW - 2 * DAY, "d1".into(), 1.0), (NOW - DAY + HOUR, "d2".into(), 2.0)]);
    let status = w.exports.export("daily", None).await.unwrap();
    assert_eq!(status.runs[0].files.len(), 2, "one file per UTC day: {:?}", status.runs[0]);
    assert_eq!(status.exported_through.as_deref(), Some("2026-11-30T23:59:00Z"));
    assert_eq!(w.exports.run_due().await, 0, "not due again for an hour");

    // An hour on: the row that was too recent, and a new one, and nothing twice.
    w.clock.advance(Duration::from_secs(3600));
    write(&w.store, vec![reading(NOW + 10 * 60 * 1_000_000_000, "d2", 4.0)]).await;
    assert_eq!(w.exports.run_due().await, 1);
    let all = rows_in(&folder);
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[2], (NOW - 30_000_000_000, "d1".into(), 3.0));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["exported_through"], "2026-12-01T00:59:00Z");
    assert_eq!(manifest["files"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn failing_runs_back_off_and_raise_an_alarm_that_removing_the_export_clears() {
    let w = world();
    write(&w.store, vec![reading(NOW - HOUR, "d1", 1.0), reading(NOW - HOUR + 1, "d2", 0.0)]).await;
    // Plans, then fails while running: d2's row makes the cast fail.
    let mut failing = spec("bad");
    failing.table = None;
    failing.sql = Some("SELECT time, device, CAST(CASE WHEN v = 0 THEN 'x' ELSE '1' END AS INT) AS n FROM t".into());
    w.exports.create(failing, None, "alice").await.unwrap();
    assert_eq!(w.exports.run_due().await, 1);
    let status = w.exports.export("bad", None).await.unwrap();
    assert_eq!(status.failures_in_a_row, 1);
    assert!(status.runs[0].error.as_deref().unwrap().contains("Cannot cast"), "{:?}", status.runs[0]);
    assert!(w.board.0.lock().unwrap().is_empty(), "one failure is not an alarm yet");
    assert_eq!(w.exports.run_due().await, 0, "the retry waits 10 s");
    w.clock.advance(Duration::from_secs(10));
    assert_eq!(w.exports.run_due().await, 1);
    assert_eq!(w.exports.export("bad", None).await.unwrap().runs[0].trigger, "retry");
    let raised = w.board.0.lock().unwrap().clone();
    assert_eq!(raised.len(), 1);
    assert!(raised[0].starts_with("raise export:bad: export bad failed 2 times in a row"), "{raised:?}");
    w.clock.advance(Duration::from_secs(10));
    assert_eq!(w.exports.run_due().await, 0, "the second retry waits 20 s");

    // The query is fixed by replacing the export: removing it clears its alarm.
    w.exports.remove("bad", None).await.unwrap();
    assert_eq!(w.board.0.lock().unwrap().last().unwrap(), "clear export:bad");
    assert!(w.exports.exports(None).await.is_empty());
}

#[tokio::test]
async fn specs_that_cannot_work_are_refused_at_creation_and_tenants_see_their_own() {
    let w = world();
    let mut typo = spec("typo");
    typo.table = None;
    typo.sql = Some("SELEKT 1".into());
    assert_eq!(w.exports.create(typo, None, "alice").await.unwrap_err().kind, corral_model::ErrorKind::BadInput);
    let mut escape = spec("escape");
    escape.destination = "../../etc".into();
    assert!(w.exports.create(escape, None, "alice").await.is_err());
    w.exports.create(spec("mine"), Some("acme"), "acme-admin").await.unwrap();
    assert!(w.exports.create(spec("mine"), None, "alice").await.is_err(), "names are unique");
    assert_eq!(w.exports.exports(Some("acme")).await.len(), 1);
    assert!(w.exports.exports(Some("metro")).await.is_empty());
    assert!(w.exports.export("mine", Some("metro")).await.is_err());
    assert!(w.exports.run_now("mine", Some("metro")).await.is_err());
    assert_eq!(w.exports.exports(None).await.len(), 1);
}
