//! The life of stored rows after they land: retention policies enforced on a schedule, rollups
//! kept up to date, a device's data deleted on request. [`Lifecycle`] implements
//! [`DataLifecycle`] for the REST routes and the CLI, and [`Lifecycle::run`] is its task.
//!
//! What it decides lives in `lifecycle.json` beside the manifest (policies set through the API,
//! rollups and each rollup's queue of bucket ranges to recompute), replaced atomically like the
//! manifest. Policies from the configuration are read at start and never written there.
//!
//! Time comes from the injected [`Clock`]: a policy's cutoff is `now - keep`.

use crate::rollup::Rollup;
use crate::store::{AgeRule, RowRule, TenantCutoff};
use crate::{QueryEngine, Store, StoreError};
use async_trait::async_trait;
use corral_model::WireError;
use corral_services::{Clock, DataLifecycle, Deletion, PolicySource, RetentionPolicy, RollupSpec, parse_duration};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const FILE: &str = "lifecycle.json";
const NANOS_PER_DAY: i64 = 86_400_000_000_000;

/// What the lifecycle needs from the rest of the platform; the binary implements it.
#[async_trait]
pub trait LifecyclePlatform: Send + Sync + 'static {
    /// The ids of `tenant`'s devices (for its retention policies).
    async fn tenant_devices(&self, tenant: &str) -> Result<HashSet<String>, WireError>;
    /// Records a deletion in the audit log.
    async fn record_deletion(&self, deletion: &Deletion);
}

/// `[storage]` settings the lifecycle reads.
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    /// Table → how long its rows are kept, from the configuration.
    pub retention: BTreeMap<String, String>,
    pub retention_check: Duration,
    pub rollup_refresh: Duration,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    retention: Vec<RetentionPolicy>,
    #[serde(default)]
    rollups: Vec<SavedRollup>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedRollup {
    spec: RollupSpec,
    /// UTC day → the bucket-aligned range of that day still to recompute.
    #[serde(default)]
    pending: BTreeMap<i64, (i64, i64)>,
}

/// Cheap to clone; every clone is the same lifecycle.
#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    engine: Arc<QueryEngine>,
    platform: Arc<dyn LifecyclePlatform>,
    clock: Arc<dyn Clock>,
    settings: LifecycleSettings,
    config_policies: Vec<RetentionPolicy>,
    path: PathBuf,
    saved: Mutex<Saved>,
    /// One rollup refresh at a time (the task's and one a request asked for).
    refreshing: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
    counters: Counters,
}

/// What `/metrics` shows of the lifecycle.
#[derive(Default)]
struct Counters {
    retention_rows_deleted: AtomicU64,
    device_rows_deleted: AtomicU64,
    retention_failures: AtomicU64,
    rollup_rows_written: AtomicU64,
    rollup_failures: AtomicU64,
}

impl Lifecycle {
    /// Loads `lifecycle.json` from the store's directory and checks the configured policies.
    pub fn open(
        store: Store,
        engine: Arc<QueryEngine>,
        platform: Arc<dyn LifecyclePlatform>,
        clock: Arc<dyn Clock>,
        settings: LifecycleSettings,
    ) -> Result<Lifecycle, StoreError> {
        let path = store.dir().join(FILE);
        let saved: Saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Invalid(format!("{}: {e}; fix or remove it", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(StoreError::Io { context: format!("reading {}", path.display()), source: e }),
        };
        let mut config_policies = Vec::new();
        for (table, keep) in &settings.retention {
            parse_duration(keep).map_err(|e| StoreError::Invalid(format!("storage.retention.{table}: {e}")))?;
            config_policies.push(RetentionPolicy {
                table: table.clone(),
                tenant: None,
                keep: keep.clone(),
                source: PolicySource::Config,
            });
        }
        for rollup in &saved.rollups {
            store.watch_changes(&rollup.spec.source);
        }
        let inner = Inner {
            store,
            engine,
            platform,
            clock,
            settings,
            config_policies,
            path,
            saved: Mutex::new(saved),
            refreshing: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            counters: Counters::default(),
        };
        Ok(Lifecycle { inner: Arc::new(inner) })
    }

    fn saved(&self) -> MutexGuard<'_, Saved> {
        self.inner.saved.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes `lifecycle.json` (temporary file, fsync, rename).
    fn save(&self, saved: &Saved) -> Result<(), StoreError> {
        let tmp = self.inner.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(saved).expect("lifecycle state serializes");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.inner.path)?;
            crate::manifest::sync_dir(self.inner.store.dir())
        };
        write().map_err(StoreError::io(format!("writing {}", self.inner.path.display())))
    }

    /// Runs until dropped: refreshes rollups every `rollup_refresh` (or when a rollup is
    /// created) and enforces retention every `retention_check`.
    pub async fn run(self) {
        let mut last_retention: Option<tokio::time::Instant> = None;
        loop {
            if last_retention.is_none_or(|at| at.elapsed() >= self.inner.settings.retention_check) {
                last_retention = Some(tokio::time::Instant::now());
                if let Err(e) = self.enforce().await {
                    self.inner.counters.retention_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "enforcing retention failed; trying again at the next check");
                }
            }
            if let Err(e) = self.refresh_rollups().await {
                self.inner.counters.rollup_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "refreshing rollups failed; their queue is kept and retried");
            }
            let _ = tokio::time::timeout(self.inner.settings.rollup_refresh, self.inner.wake.notified()).await;
        }
    }

    fn all_policies(&self) -> Vec<RetentionPolicy> {
        let mut all = self.inner.config_policies.clone();
        all.extend(self.saved().retention.iter().cloned());
        all
    }

    /// The cutoff of `table`'s own policy (not a tenant's), if it has one.
    fn table_cutoff(&self, table: &str, now_ns: i64) -> Option<i64> {
        let policies = self.all_policies();
        let policy = policies.iter().find(|p| p.table == table && p.tenant.is_none())?;
        Some(now_ns.saturating_sub(keep_ns(&policy.keep)))
    }

    /// Applies every policy: per table, its own cutoff and its tenants'.
    pub async fn enforce(&self) -> Result<Vec<Deletion>, StoreError> {
        let now_ns = self.inner.clock.now_ns();
        let mut by_table: BTreeMap<String, AgeRule> = BTreeMap::new();
        for policy in self.all_policies() {
            if !self.inner.store.has_table(&policy.table) {
                continue;
            }
            let cutoff_ns = now_ns.saturating_sub(keep_ns(&policy.keep));
            let rule = by_table.entry(policy.table.clone()).or_default();
            match &policy.tenant {
                None => rule.default_ns = Some(cutoff_ns),
                Some(tenant) => {
                    let devices =
                        self.inner.platform.tenant_devices(tenant).await.map_err(|e| StoreError::Invalid(e.to_string()))?;
                    rule.tenants.push(TenantCutoff { tenant: tenant.clone(), cutoff_ns, devices });
                }
            }
        }
        if by_table.is_empty() {
            return Ok(Vec::new());
        }
        let kept_from: BTreeMap<String, Option<i64>> = by_table.iter().map(|(t, r)| (t.clone(), r.default_ns)).collect();
        let rules = by_table.into_iter().map(|(table, rule)| (table, RowRule::Age(rule))).collect();
        let mut deletions = self.inner.store.purge(rules, "retention".into()).await?;
        let rows: u64 = deletions.iter().map(|d| d.rows_deleted).sum();
        self.inner.counters.retention_rows_deleted.fetch_add(rows, Ordering::Relaxed);
        for deletion in &mut deletions {
            deletion.kept_from = kept_from.get(&deletion.table).copied().flatten().map(rfc3339);
            self.inner.platform.record_deletion(deletion).await;
        }
        Ok(deletions)
    }

    /// Deletes every row `device` wrote, in every table.
    pub async fn delete_device(&self, device: &str) -> Result<Vec<Deletion>, StoreError> {
        let rules = self.inner.store.table_names().into_iter().map(|t| (t, RowRule::Device(device.to_string()))).collect();
        let deletions = self.inner.store.purge(rules, format!("device {device}")).await?;
        let rows: u64 = deletions.iter().map(|d| d.rows_deleted).sum();
        self.inner.counters.device_rows_deleted.fetch_add(rows, Ordering::Relaxed);
        for deletion in &deletions {
            self.inner.platform.record_deletion(deletion).await;
        }
        Ok(deletions)
    }

    /// Takes the changes the store noted into each rollup's saved queue, then recomputes the
    /// queued ranges. Returns the rollup rows written.
    pub async fn refresh_rollups(&self) -> Result<usize, StoreError> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let store = &self.inner.store;
        let taken = {
            let mut saved = self.saved();
            let mut taken: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for rollup in &mut saved.rollups {
                let granules = taken.entry(rollup.spec.source.clone()).or_insert_with(|| store.changes(&rollup.spec.source));
                let Ok(checked) = Rollup::new(rollup.spec.clone()) else { continue };
                for granule in granules.iter() {
                    let bucket = checked.bucket(granule * crate::store::CHANGE_GRANULE_NS);
                    queue(&mut rollup.pending, bucket, bucket + checked.every_ns);
                }
            }
            if !taken.values().all(Vec::is_empty) {
                self.save(&saved)?;
            }
            taken
        };
        for (source, granules) in &taken {
            store.ack_changes(source, granules);
        }
        let now_ns = self.inner.clock.now_ns();
        let rollups: Vec<SavedRollup> = self.saved().rollups.clone();
        let mut written = 0;
        for rollup in rollups {
            let checked = Rollup::new(rollup.spec.clone()).map_err(|e| StoreError::Invalid(e.to_string()))?;
            // Raw rows older than the source's retention are gone or going: a bucket that
            // starts before the cutoff would be summarised from part of its rows.
            let floor = self.table_cutoff(&rollup.spec.source, now_ns).map(|c| checked.bucket(c) + checked.every_ns);
            for (day, range) in rollup.pending {
                let (from, to) = range;
                let from = floor.map_or(from, |floor| from.max(floor));
                if from < to {
                    let rows = checked.refresh(store, &self.inner.engine, from, to).await?;
                    self.inner.counters.rollup_rows_written.fetch_add(rows as u64, Ordering::Relaxed);
                    written += rows;
                }
                let mut saved = self.saved();
                if let Some(r) = saved.rollups.iter_mut().find(|r| r.spec.name == rollup.spec.name) {
                    // Changes queued meanwhile widened the day's range: it stays for the next pass.
                    if r.pending.get(&day) == Some(&range) {
                        r.pending.remove(&day);
                    }
                }
                self.save(&saved)?;
            }
        }
        Ok(written)
    }

    fn check_policy(&self, policy: &RetentionPolicy) -> Result<(), WireError> {
        corral_model::TableName::new(&policy.table).map_err(|e| WireError::bad_input(e.to_string()))?;
        parse_duration(&policy.keep).map_err(WireError::bad_input)?;
        let declared = self.inner.config_policies.iter().any(|p| p.table == policy.table && p.tenant == policy.tenant);
        if declared {
            return Err(WireError::new(
                corral_model::ErrorKind::Conflict,
                format!("the retention of {} is set in the configuration (storage.retention); change it there", policy.table),
            ));
        }
        Ok(())
    }
}

impl corral_services::MetricsSource for Lifecycle {
    fn render(&self, out: &mut String) {
        let c = &self.inner.counters;
        let mut out = corral_services::metrics::Exposition::new(out);
        out.family("corral_rows_deleted_total", "Stored rows deleted, by why.", "counter")
            .sample(&[("reason", "retention")], c.retention_rows_deleted.load(Ordering::Relaxed))
            .sample(&[("reason", "device")], c.device_rows_deleted.load(Ordering::Relaxed));
        out.counter(
            "corral_retention_failures_total",
            "Retention runs that failed (see the log).",
            c.retention_failures.load(Ordering::Relaxed),
        );
        out.counter(
            "corral_rollup_rows_written_total",
            "Rollup rows (re)computed and written.",
            c.rollup_rows_written.load(Ordering::Relaxed),
        );
        out.counter(
            "corral_rollup_failures_total",
            "Rollup refreshes that failed (see the log).",
            c.rollup_failures.load(Ordering::Relaxed),
        );
        let pending: Vec<(String, usize)> = self.saved().rollups.iter().map(|r| (r.spec.name.clone(), r.pending.len())).collect();
        let mut family =
            out.family("corral_rollup_pending_days", "UTC days with buckets a rollup has yet to recompute.", "gauge");
        for (name, days) in &pending {
            family.sample(&[("rollup", name)], days);
        }
    }
}

/// Adds `[from, to)` to the day's range in `pending`.
fn queue(pending: &mut BTreeMap<i64, (i64, i64)>, from: i64, to: i64) {
    let range = pending.entry(from.div_euclid(NANOS_PER_DAY)).or_insert((from, to));
    *range = (range.0.min(from), range.1.max(to));
}

fn keep_ns(keep: &str) -> i64 {
    let keep = parse_duration(keep).expect("policies are checked when set");
    i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX)
}

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn wire(e: StoreError) -> WireError {
    e.to_wire()
}

#[async_trait]
impl DataLifecycle for Lifecycle {
    async fn retention_policies(&self) -> Vec<RetentionPolicy> {
        self.all_policies()
    }

    async fn set_retention(&self, mut policy: RetentionPolicy) -> Result<RetentionPolicy, WireError> {
        policy.source = PolicySource::Api;
        self.check_policy(&policy)?;
        let mut saved = self.saved();
        saved.retention.retain(|p| !(p.table == policy.table && p.tenant == policy.tenant));
        saved.retention.push(policy.clone());
        self.save(&saved).map_err(wire)?;
        tracing::info!(table = %policy.table, tenant = ?policy.tenant, keep = %policy.keep, "retention policy set");
        Ok(policy)
    }

    async fn remove_retention(&self, table: &str, tenant: Option<&str>) -> Result<(), WireError> {
        let mut saved = self.saved();
        let before = saved.retention.len();
        saved.retention.retain(|p| !(p.table == table && p.tenant.as_deref() == tenant));
        if saved.retention.len() == before {
            return Err(WireError::new(
                corral_model::ErrorKind::NotFound,
                format!("no retention policy set through the API for table {table}"),
            ));
        }
        self.save(&saved).map_err(wire)
    }

    async fn enforce_retention(&self) -> Result<Vec<Deletion>, WireError> {
        self.enforce().await.map_err(wire)
    }

    async fn rollups(&self) -> Vec<RollupSpec> {
        self.saved().rollups.iter().map(|r| r.spec.clone()).collect()
    }

    async fn create_rollup(&self, spec: RollupSpec) -> Result<RollupSpec, WireError> {
        let rollup = Rollup::new(spec)?;
        let store = &self.inner.store;
        {
            let saved = self.saved();
            if saved.rollups.iter().any(|r| r.spec.name == rollup.spec.name) || store.has_table(&rollup.spec.name) {
                return Err(WireError::new(
                    corral_model::ErrorKind::Conflict,
                    format!("a table named {} exists already", rollup.spec.name),
                ));
            }
            if saved.rollups.iter().any(|r| r.spec.name == rollup.spec.source) {
                return Err(WireError::bad_input("a rollup reads raw rows, not another rollup"));
            }
        }
        // Watch first, so rows landing while the days are listed are queued either way.
        store.watch_changes(&rollup.spec.source);
        let mut pending = BTreeMap::new();
        for day in store.days_with_rows(&rollup.spec.source) {
            queue(&mut pending, day * NANOS_PER_DAY, (day + 1) * NANOS_PER_DAY);
        }
        let mut saved = self.saved();
        saved.rollups.push(SavedRollup { spec: rollup.spec.clone(), pending });
        self.save(&saved).map_err(wire)?;
        drop(saved);
        self.inner.wake.notify_one();
        tracing::info!(rollup = %rollup.spec.name, source = %rollup.spec.source, every = %rollup.spec.every, "rollup created; filling it from stored rows");
        Ok(rollup.spec)
    }

    async fn remove_rollup(&self, name: &str) -> Result<(), WireError> {
        let mut saved = self.saved();
        let Some(at) = saved.rollups.iter().position(|r| r.spec.name == name) else {
            return Err(WireError::new(corral_model::ErrorKind::NotFound, format!("no rollup named {name}")));
        };
        let removed = saved.rollups.remove(at);
        self.save(&saved).map_err(wire)?;
        if !saved.rollups.iter().any(|r| r.spec.source == removed.spec.source) {
            self.inner.store.unwatch_changes(&removed.spec.source);
        }
        Ok(())
    }

    async fn delete_device_data(&self, device: &str) -> Result<Vec<Deletion>, WireError> {
        self.delete_device(device).await.map_err(wire)
    }
}
