//! Retention, rollups and deleting a device's data, on the store alone with a manual clock:
//! what goes, what stays, and that a restart neither brings deleted rows back nor loses a
//! rollup's queued work.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use async_trait::async_trait;
use corral_model::{Batch, FieldValue, Row, TableName, WireError};
use corral_services::{Clock, DataLifecycle, Deletion, ManualClock, RetentionPolicy, RollupSpec, SystemTable};
use corral_store::{Lifecycle, LifecyclePlatform, LifecycleSettings, QueryEngine, Store, StoreConfig, SystemTables};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DAY: i64 = 86_400_000_000_000;
const HOUR: i64 = 3_600_000_000_000;
/// 2026-12-01T00:00:00Z.
const NOW: i64 = 1_796_083_200 * 1_000_000_000;

/// Devices `a1`, `a2` belong to tenant `acme`; `b1` to `bolt`. Deletions are kept for the asserts.
#[derive(Default)]
struct Platform {
    recorded: Mutex<Vec<Deletion>>,
}

#[async_trait]
impl LifecyclePlatform for Platform {
    async fn tenant_devices(&self, tenant: &str) -> Result<HashSet<String>, WireError> {
        let all = [("a1", "acme"), ("a2", "acme"), ("b1", "bolt")];
        Ok(all.iter().filter(|(_, t)| *t == tenant).map(|(d, _)| d.to_string()).collect())
    }

    async fn record_deletion(&self, deletion: &Deletion) {
        self.recorded.lock().unwrap().push(deletion.clone());
    }
}

struct Devices;

#[async_trait]
impl SystemTable for Devices {
    fn name(&self) -> &'static str {
        "devices"
    }

    async fn scan(&self, _tenant: Option<&str>) -> Result<RecordBatch, WireError> {
        let schema = Arc::new(Schema::new(vec![Field::new("device", DataType::Utf8, false)]));
        let ids = arrow::array::StringArray::from_iter_values(["a1", "a2", "b1"]);
        RecordBatch::try_new(schema, vec![Arc::new(ids)]).map_err(|e| WireError::internal(e.to_string()))
    }
}

struct World {
    dir: tempfile::TempDir,
    store: Store,
    engine: Arc<QueryEngine>,
    lifecycle: Lifecycle,
    platform: Arc<Platform>,
    clock: ManualClock,
}

fn open_at(dir: tempfile::TempDir, clock: ManualClock, retention: &[(&str, &str)]) -> World {
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let engine =
        Arc::new(QueryEngine::new(store.clone(), SystemTables::new(vec![Arc::new(Devices)]).unwrap(), 256 << 20).unwrap());
    let platform = Arc::new(Platform::default());
    let settings = LifecycleSettings {
        retention: retention.iter().map(|(t, k)| (t.to_string(), k.to_string())).collect::<BTreeMap<_, _>>(),
        retention_check: Duration::from_secs(3600),
        rollup_refresh: Duration::from_secs(60),
    };
    let lifecycle = Lifecycle::open(store.clone(), engine.clone(), platform.clone(), Arc::new(clock.clone()), settings).unwrap();
    World { dir, store, engine, lifecycle, platform, clock }
}

fn open(retention: &[(&str, &str)]) -> World {
    open_at(tempfile::tempdir().unwrap(), ManualClock::at(NOW), retention)
}

/// Reopens the same directory, as after a restart (the old store is dropped unpersisted).
fn restart(world: World, retention: &[(&str, &str)]) -> World {
    let World { dir, clock, store, engine, lifecycle, platform } = world;
    drop((store, engine, lifecycle, platform));
    open_at(dir, clock, retention)
}

fn reading(time_ns: i64, device: &str, speed: f64) -> Row {
    Row::new(time_ns, device).field("speed", FieldValue::Float(speed))
}

async fn write(store: &Store, table: &str, rows: Vec<Row>) {
    store.write(vec![Batch { table: TableName::new(table).unwrap(), rows }]).await.unwrap();
}

async fn sql(world: &World, query: &str) -> String {
    let out = world.engine.query(query, None, 10_000).await.unwrap();
    pretty_format_batches(&out.batches).unwrap().to_string()
}

async fn count(world: &World, query: &str) -> i64 {
    let out = world.engine.query(query, None, 10).await.unwrap();
    let column = out.batches[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().clone();
    column.value(0)
}

/// One reading per device every 6 hours for the 10 days before `NOW`.
fn ten_days() -> Vec<Row> {
    let mut rows = Vec::new();
    for step in 0..40 {
        let t = NOW - 10 * DAY + step * 6 * HOUR;
        for device in ["a1", "a2", "b1"] {
            rows.push(reading(t, device, step as f64));
        }
    }
    rows
}

#[tokio::test]
async fn retention_drops_old_files_trims_the_straddling_day_and_survives_a_restart() {
    let world = open(&[("t", "3d")]);
    write(&world.store, "t", ten_days()).await;
    world.store.persist().await.unwrap();
    // Rows written late for an old day sit in the buffer and the WAL: they go too.
    write(&world.store, "t", vec![reading(NOW - 9 * DAY + 1, "b1", 99.0)]).await;
    // 2.5 days kept: cutoff falls inside a day, so that day's file is rewritten.
    world.clock.advance(Duration::from_secs(12 * 3600));
    let cutoff = world.clock.now_ns() - 3 * DAY;

    let deletions = world.lifecycle.enforce().await.unwrap();
    assert_eq!(deletions.len(), 1);
    let d = &deletions[0];
    let expected_gone = ten_days().iter().filter(|r| r.time_ns < cutoff).count() as u64 + 1;
    assert_eq!(d.rows_deleted, expected_gone, "{d:?}");
    assert!(d.files_dropped >= 7 && d.files_rewritten == 1, "{d:?}");
    assert_eq!(d.kept_from.as_deref(), Some("2026-11-28T12:00:00Z"));
    assert_eq!(*world.platform.recorded.lock().unwrap(), deletions, "every deletion is recorded");

    let kept = ten_days().iter().filter(|r| r.time_ns >= cutoff).count() as i64;
    assert_eq!(count(&world, "SELECT count(*) FROM t").await, kept);
    assert_eq!(count(&world, &format!("SELECT count(*) FROM t WHERE time < to_timestamp_nanos({cutoff})")).await, 0);

    // A second run has nothing to delete.
    assert!(world.lifecycle.enforce().await.unwrap().is_empty());

    let world = restart(world, &[("t", "3d")]);
    assert_eq!(count(&world, "SELECT count(*) FROM t").await, kept, "nothing deleted comes back from the WAL");
}

#[tokio::test]
async fn a_tenants_policy_overrides_the_tables_for_its_devices_and_latest_rows_obey() {
    let world = open(&[("t", "30d")]);
    write(&world.store, "t", ten_days()).await;
    world.store.persist().await.unwrap();
    world
        .lifecycle
        .set_retention(RetentionPolicy {
            table: "t".into(),
            tenant: Some("acme".into()),
            keep: "2d".into(),
            source: Default::default(),
        })
        .await
        .unwrap();
    world.lifecycle.enforce().await.unwrap();
    let cutoff = NOW - 2 * DAY;
    let by_device = sql(&world, "SELECT device, count(*) AS n, min(time) AS oldest FROM t GROUP BY device ORDER BY device").await;
    let acme = ten_days().iter().filter(|r| r.device == "a1" && r.time_ns >= cutoff).count();
    assert!(by_device.contains(&format!("| a1     | {acme} ")), "{by_device}");
    assert!(by_device.contains("| b1     | 40 "), "bolt keeps the table's 30 days:\n{by_device}");

    // acme's devices stop writing; two days on, their latest rows are past retention too.
    world.clock.advance(Duration::from_secs(3 * 86_400));
    world.lifecycle.enforce().await.unwrap();
    let latest = sql(&world, "SELECT device FROM latest.t ORDER BY device").await;
    assert!(!latest.contains("a1") && latest.contains("b1"), "{latest}");
    let world = restart(world, &[("t", "30d")]);
    let latest = sql(&world, "SELECT device FROM latest.t ORDER BY device").await;
    assert!(!latest.contains("a1") && latest.contains("b1"), "after a restart too:\n{latest}");
    assert_eq!(world.lifecycle.retention_policies().await.len(), 2, "the API policy is saved");
}

#[tokio::test]
async fn configured_policies_cannot_be_changed_through_the_api() {
    let world = open(&[("t", "30d")]);
    let err = world
        .lifecycle
        .set_retention(RetentionPolicy { table: "t".into(), tenant: None, keep: "1d".into(), source: Default::default() })
        .await
        .unwrap_err();
    assert!(err.message.contains("configuration"), "{err}");
    let err = world
        .lifecycle
        .set_retention(RetentionPolicy { table: "t".into(), tenant: None, keep: "soon".into(), source: Default::default() })
        .await
        .unwrap_err();
    assert!(err.message.contains("not a duration"), "{err}");
}

#[tokio::test]
async fn deleting_a_device_removes_it_everywhere_and_for_good() {
    let world = open(&[]);
    write(&world.store, "t", ten_days()).await;
    write(&world.store, "u", vec![reading(NOW, "a2", 1.0), reading(NOW, "b1", 2.0)]).await;
    world.store.persist().await.unwrap();
    // A point written twice makes its day dirty; and rows still only in the WAL.
    write(&world.store, "t", vec![reading(NOW - 10 * DAY, "b1", 7.0), reading(NOW - HOUR, "a2", 5.0)]).await;

    let deletions = world.lifecycle.delete_device_data("a2").await.unwrap();
    let rows: u64 = deletions.iter().map(|d| d.rows_deleted).sum();
    assert_eq!(rows, 40 + 1 + 1, "{deletions:?}");
    assert!(deletions.iter().all(|d| d.reason == "device a2"));
    assert_eq!(count(&world, "SELECT count(*) FROM t WHERE device = 'a2'").await, 0);
    assert_eq!(count(&world, "SELECT count(*) FROM u WHERE device = 'a2'").await, 0);
    assert_eq!(count(&world, "SELECT count(*) FROM latest.t WHERE device = 'a2'").await, 0);
    assert_eq!(count(&world, "SELECT count(*) FROM t").await, 80, "the other devices keep every row");
    let rewritten =
        sql(&world, &format!("SELECT speed FROM t WHERE device = 'b1' AND time = to_timestamp_nanos({})", NOW - 10 * DAY)).await;
    assert_eq!(rewritten.lines().filter(|l| l.starts_with("| ")).count(), 2, "one version of the point:\n{rewritten}");
    assert!(rewritten.contains("| 7.0   |"), "the newer version of the point wins after the merge:\n{rewritten}");

    let world = restart(world, &[]);
    assert_eq!(count(&world, "SELECT count(*) FROM t WHERE device = 'a2'").await, 0, "the WAL brings nothing back");
    assert_eq!(count(&world, "SELECT count(*) FROM t").await, 80);
}

fn hourly() -> RollupSpec {
    RollupSpec { name: "t_1h".into(), source: "t".into(), every: "1h".into(), aggregates: vec![], fields: vec![] }
}

/// The rollup's row for a1's bucket starting at `bucket`, as `avg|min|max|count|first|last`.
async fn bucket(world: &World, bucket: i64) -> String {
    let out = sql(
        world,
        &format!(
            "SELECT speed_avg, speed_min, speed_max, speed_count, speed_first, speed_last FROM t_1h \
             WHERE device = 'a1' AND time = to_timestamp_nanos({bucket})"
        ),
    )
    .await;
    out.lines().nth(3).unwrap_or("").split('|').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("|")
}

#[tokio::test]
async fn a_rollup_fills_from_stored_rows_follows_late_data_and_outlives_the_raw_rows() {
    let world = open(&[("t", "3d")]);
    let h = NOW - 2 * DAY;
    write(&world.store, "t", vec![reading(h + 1, "a1", 4.0), reading(h + 2, "a1", 2.0), reading(h + 3, "a1", 6.0)]).await;
    world.store.persist().await.unwrap();
    write(&world.store, "t", vec![reading(NOW - HOUR, "a1", 1.0), reading(NOW - HOUR + 5, "b1", 3.0)]).await;

    world.lifecycle.create_rollup(hourly()).await.unwrap();
    world.lifecycle.refresh_rollups().await.unwrap();
    assert_eq!(bucket(&world, h).await, "4.0|2.0|6.0|3|4.0|6.0");
    assert_eq!(bucket(&world, NOW - HOUR).await, "1.0|1.0|1.0|1|1.0|1.0");

    // Late data for an old bucket corrects it (within the raw retention).
    write(&world.store, "t", vec![reading(h + 4, "a1", 8.0)]).await;
    world.lifecycle.refresh_rollups().await.unwrap();
    assert_eq!(bucket(&world, h).await, "5.0|2.0|8.0|4|4.0|8.0");
    assert_eq!(count(&world, "SELECT count(*) FROM t_1h WHERE device = 'a1'").await, 2, "one row per bucket");

    // Two days on, the raw rows of that hour go; their hourly summary stays.
    world.clock.advance(Duration::from_secs(2 * 86_400));
    world.lifecycle.enforce().await.unwrap();
    assert_eq!(count(&world, &format!("SELECT count(*) FROM t WHERE time < to_timestamp_nanos({})", NOW - DAY)).await, 0);
    assert_eq!(bucket(&world, h).await, "5.0|2.0|8.0|4|4.0|8.0");
    // Late data for that bucket now would summarise part of it: it is not recomputed.
    write(&world.store, "t", vec![reading(h + 5, "a1", 100.0)]).await;
    world.lifecycle.refresh_rollups().await.unwrap();
    assert_eq!(bucket(&world, h).await, "5.0|2.0|8.0|4|4.0|8.0");
}

#[tokio::test]
async fn changes_a_rollup_has_not_taken_survive_a_restart() {
    let world = open(&[]);
    world.lifecycle.create_rollup(hourly()).await.unwrap();
    world.lifecycle.refresh_rollups().await.unwrap();
    // Rows land and reach Parquet (leaving the WAL) before the rollup runs; then the process dies.
    write(&world.store, "t", vec![reading(NOW, "a1", 2.0), reading(NOW + 1, "a1", 4.0)]).await;
    world.store.persist().await.unwrap();
    write(&world.store, "t", vec![reading(NOW + 2 * HOUR, "a1", 9.0)]).await;
    let world = restart(world, &[]);
    world.lifecycle.refresh_rollups().await.unwrap();
    assert_eq!(bucket(&world, NOW).await, "3.0|2.0|4.0|2|2.0|4.0", "rows persisted before the crash");
    assert_eq!(bucket(&world, NOW + 2 * HOUR).await, "9.0|9.0|9.0|1|9.0|9.0", "rows replayed from the WAL");
    assert_eq!(world.clock.now_ns(), NOW);
}

#[tokio::test]
async fn rollup_specs_are_checked_and_removing_one_keeps_its_rows() {
    let world = open(&[]);
    write(&world.store, "t", vec![reading(NOW, "a1", 2.0)]).await;
    world.lifecycle.create_rollup(hourly()).await.unwrap();
    let again = world.lifecycle.create_rollup(hourly()).await.unwrap_err();
    assert!(again.message.contains("exists"), "{again}");
    let mut on_table = hourly();
    on_table.name = "t".into();
    on_table.source = "t_1h".into();
    assert!(world.lifecycle.create_rollup(on_table).await.is_err());
    world.lifecycle.refresh_rollups().await.unwrap();
    world.lifecycle.remove_rollup("t_1h").await.unwrap();
    assert!(world.lifecycle.rollups().await.is_empty());
    assert_eq!(count(&world, "SELECT count(*) FROM t_1h").await, 1);
    assert!(world.lifecycle.remove_rollup("t_1h").await.is_err());
}
