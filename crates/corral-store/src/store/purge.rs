//! Deleting stored rows: rows past their retention, or every row of one device.
//!
//! A purge never edits a file. Per table and UTC day it decides from the manifest alone whether a
//! file is kept, dropped whole (every row is past its cutoff) or must be read; a file that must be
//! read is checked on its `time` and `device` columns first and rewritten only if some rows go
//! and some stay. New files are written beside the old ones and the manifest swaps them in one
//! atomic commit, so a crash at any point leaves the old state or the new, never half (files of
//! an uncommitted purge are orphans, removed at the next start). Replaced files are deleted after
//! the same grace period as compaction's, for queries that may still be reading them.
//!
//! Rows still in the write buffer are persisted first when the rule would delete one of them:
//! deleting them from memory alone would let the WAL bring them back at the next start.
//!
//! A dirty day (one whose files may hold two versions of a point, see `points.rs`) is merged
//! whole when any of its files changes, because queries order its files by name and a rewritten
//! file takes a newer name than the files written after it.
//!
//! Retention re-reads a file only when the cutoffs that fall inside its time range changed since
//! it was last checked ([`FileMeta::purge_mark`]), so a year of files that straddle no cutoff
//! costs nothing per run. A device that moves to another tenant keeps the rows already checked
//! under its old tenant's policy.

use super::{Store, StoreError};
use crate::buffer::{align, concat_aligned};
use crate::manifest::FileMeta;
use crate::persist::NANOS_PER_DAY;
use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use corral_services::Deletion;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Instant;

/// Which rows of one table a purge deletes.
#[derive(Debug, Clone)]
pub enum RowRule {
    /// Rows older than their device's cutoff.
    Age(AgeRule),
    /// Every row of this device.
    Device(String),
}

/// Rows older than a cutoff: a tenant's for its devices, else the table's (`None`: kept).
#[derive(Debug, Clone, Default)]
pub struct AgeRule {
    pub default_ns: Option<i64>,
    pub tenants: Vec<TenantCutoff>,
}

#[derive(Debug, Clone)]
pub struct TenantCutoff {
    pub tenant: String,
    pub cutoff_ns: i64,
    pub devices: HashSet<String>,
}

enum Verdict {
    Keep,
    Drop,
    Read,
}

impl RowRule {
    fn cutoff(&self, device: &str) -> Option<i64> {
        match self {
            RowRule::Age(rule) => {
                rule.tenants.iter().find(|t| t.devices.contains(device)).map(|t| t.cutoff_ns).or(rule.default_ns)
            }
            RowRule::Device(_) => None,
        }
    }

    pub(crate) fn deletes(&self, device: &str, time_ns: i64) -> bool {
        match self {
            RowRule::Age(_) => self.cutoff(device).is_some_and(|cutoff| time_ns < cutoff),
            RowRule::Device(d) => d == device,
        }
    }

    fn verdict(&self, file: &FileMeta) -> Verdict {
        let RowRule::Age(rule) = self else { return Verdict::Read };
        let cutoffs = rule.default_ns.into_iter().chain(rule.tenants.iter().map(|t| t.cutoff_ns));
        let Some(highest) = cutoffs.clone().max() else { return Verdict::Keep };
        if file.min_time_ns >= highest {
            return Verdict::Keep;
        }
        if rule.default_ns.is_some() && cutoffs.min().is_some_and(|lowest| file.max_time_ns < lowest) {
            return Verdict::Drop;
        }
        if file.purge_mark.is_some() && file.purge_mark == self.mark(file) {
            return Verdict::Keep;
        }
        Verdict::Read
    }

    /// What this rule means for `file`: its cutoffs clamped to the file's time range. Equal marks
    /// delete the same rows, so a file checked under one needs no second look.
    fn mark(&self, file: &FileMeta) -> Option<u64> {
        let RowRule::Age(rule) = self else { return None };
        let clamp = |c: i64| c.clamp(file.min_time_ns, file.max_time_ns.saturating_add(1));
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        rule.default_ns.map(clamp).hash(&mut hasher);
        let mut tenants: Vec<(&str, i64)> = rule.tenants.iter().map(|t| (t.tenant.as_str(), clamp(t.cutoff_ns))).collect();
        tenants.sort_unstable();
        tenants.hash(&mut hasher);
        Some(hasher.finish())
    }

    /// The rows of `batch` (a table's columns, `time` then `device` first) that stay.
    fn keep_mask(&self, batch: &RecordBatch) -> BooleanArray {
        let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
        let devices = batch.column(1).as_string::<i32>();
        (0..batch.num_rows()).map(|i| Some(!self.deletes(devices.value(i), times.value(i)))).collect()
    }
}

/// One table's purge, worked out from the manifest and done off the runtime.
struct TablePurge {
    table: String,
    schema: SchemaRef,
    keys: Vec<usize>,
    rule: RowRule,
    /// The table's files by UTC day, and the dirty days among them.
    days: BTreeMap<i64, Vec<FileMeta>>,
    dirty_days: std::collections::BTreeSet<i64>,
}

/// What a purge did to one table's files, not yet committed.
#[derive(Default)]
struct Outcome {
    removed: Vec<String>,
    added: Vec<FileMeta>,
    /// Files read and kept as they are, with their new mark.
    marked: Vec<(String, Option<u64>)>,
    cleaned_days: Vec<i64>,
    rows_deleted: u64,
    files_dropped: u64,
    files_rewritten: u64,
}

impl Store {
    /// Deletes the rows each rule names from its table, everywhere they are stored: the write
    /// buffer (persisted first), Parquet files and the latest rows. One purge, compaction or
    /// snapshot at a time.
    pub async fn purge(&self, rules: Vec<(String, RowRule)>, reason: String) -> Result<Vec<Deletion>, StoreError> {
        let one_at_a_time = self.inner.persist_lock.clone().lock_owned().await;
        let store = self.clone();
        tokio::spawn(async move {
            let _held_until_done = one_at_a_time;
            store.purge_locked(rules, reason).await
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)?
    }

    async fn purge_locked(&self, rules: Vec<(String, RowRule)>, reason: String) -> Result<Vec<Deletion>, StoreError> {
        if self.buffer_holds_deleted_rows(&rules) {
            self.persist_locked().await?;
        }
        let started = Instant::now();
        let plans = self.plan_purge(rules);
        let dir = self.inner.config.dir.clone();
        let mut next_file_id = self.state().manifest.next_file_id;
        let first_id = next_file_id;
        let (outcomes, next, plans) = tokio::task::spawn_blocking(move || {
            let mut outcomes = Vec::new();
            for plan in &plans {
                match purge_table(&dir, plan, &mut next_file_id) {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(e) => return Err((e, next_file_id)),
                }
            }
            Ok((outcomes, next_file_id, plans))
        })
        .await
        .expect("purge task does not panic")
        .map_err(|(e, next)| {
            self.state().manifest.next_file_id = next.max(first_id);
            StoreError::Io { context: "rewriting Parquet files without deleted rows".into(), source: e }
        })?;
        let mut next_file_id = next;
        let latest = self.forget_latest(&plans, &mut next_file_id).await?;

        let mut manifest = self.state().manifest.clone();
        let mut replaced = Vec::new();
        let mut replaced_latest = Vec::new();
        let mut deletions = Vec::new();
        for (plan, outcome) in plans.iter().zip(outcomes) {
            let table = manifest.tables.entry(plan.table.clone()).or_default();
            table.files.retain(|f| !outcome.removed.contains(&f.path));
            for file in table.files.iter_mut() {
                if let Some((_, mark)) = outcome.marked.iter().find(|(path, _)| *path == file.path) {
                    file.purge_mark = *mark;
                }
            }
            table.files.extend(outcome.added);
            outcome.cleaned_days.iter().for_each(|day| {
                table.dirty_days.remove(day);
            });
            if let Some((_, path, _)) = latest.iter().find(|(name, ..)| *name == plan.table) {
                replaced_latest.extend(table.latest.replace(path.clone()));
            }
            replaced.extend(outcome.removed);
            if outcome.rows_deleted > 0 || outcome.files_dropped > 0 {
                deletions.push(Deletion {
                    table: plan.table.clone(),
                    reason: reason.clone(),
                    rows_deleted: outcome.rows_deleted,
                    files_dropped: outcome.files_dropped,
                    files_rewritten: outcome.files_rewritten,
                    kept_from: None,
                });
            }
        }
        manifest.next_file_id = next_file_id;
        let saved = manifest.clone();
        let dir = self.inner.config.dir.clone();
        tokio::task::spawn_blocking(move || saved.save(&dir))
            .await
            .expect("manifest save does not panic")
            .map_err(StoreError::io("committing manifest.json after deleting rows"))?;
        {
            let mut state = self.state();
            state.manifest = manifest;
            for (name, _, batch) in latest {
                state.table(&name).latest.set_persisted(batch);
            }
            let now = Instant::now();
            state.retired.extend(replaced.iter().map(|p| (self.inner.config.dir.join(p), now)));
        }
        for path in replaced_latest {
            let _ = std::fs::remove_file(self.inner.config.dir.join(path));
        }
        let rows: u64 = deletions.iter().map(|d| d.rows_deleted).sum();
        tracing::info!(%reason, tables = deletions.len(), rows, ms = started.elapsed().as_millis() as u64, "deleted stored rows");
        Ok(deletions)
    }

    fn buffer_holds_deleted_rows(&self, rules: &[(String, RowRule)]) -> bool {
        let mut state = self.state();
        rules.iter().any(|(table, rule)| {
            let Some(snapshot) = self.snapshot_locked(&mut state, table) else { return false };
            snapshot.batches.iter().any(|b| rule.keep_mask(b).false_count() > 0)
        })
    }

    fn plan_purge(&self, rules: Vec<(String, RowRule)>) -> Vec<TablePurge> {
        let state = self.state();
        rules
            .into_iter()
            .filter_map(|(table, rule)| {
                let live = state.tables.get(&table)?;
                let stored = state.manifest.tables.get(&table)?;
                let mut days: BTreeMap<i64, Vec<FileMeta>> = BTreeMap::new();
                for file in &stored.files {
                    days.entry(file.min_time_ns.div_euclid(NANOS_PER_DAY)).or_default().push(file.clone());
                }
                Some(TablePurge {
                    table,
                    schema: live.schema.arrow(),
                    keys: live.schema.key_columns(),
                    rule,
                    days,
                    dirty_days: stored.dirty_days.clone(),
                })
            })
            .collect()
    }

    /// Drops the latest rows the rules delete (and, for a deleted device, which columns it wrote)
    /// and writes each changed table's latest-rows file. Returns, per changed table, the new
    /// file and what it holds, for the manifest commit.
    async fn forget_latest(
        &self,
        plans: &[TablePurge],
        next_file_id: &mut u64,
    ) -> Result<Vec<(String, String, RecordBatch)>, StoreError> {
        let mut changed = Vec::new();
        {
            let mut state = self.state();
            for plan in plans {
                let Some(table) = state.tables.get_mut(&plan.table) else { continue };
                let forget_columns = match &plan.rule {
                    RowRule::Device(device) => Some(device.as_str()),
                    RowRule::Age(_) => None,
                };
                if table.latest.forget(|device, time| plan.rule.deletes(device, time), forget_columns) {
                    changed.push((plan.table.clone(), table.latest.batch_for_file(&table.schema)));
                }
            }
        }
        let dir = self.inner.config.dir.clone();
        let mut next = *next_file_id;
        let written = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (table, batch) in changed {
                let path = crate::persist::write_latest(&dir, &table, &batch, &mut next)?;
                out.push((table, path, batch));
            }
            Ok::<_, std::io::Error>((out, next))
        })
        .await
        .expect("latest write does not panic")
        .map_err(StoreError::io("writing latest rows after deleting rows"))?;
        *next_file_id = written.1;
        Ok(written.0)
    }
}

fn purge_table(dir: &Path, plan: &TablePurge, next_file_id: &mut u64) -> std::io::Result<Outcome> {
    let mut outcome = Outcome::default();
    for (day, files) in &plan.days {
        let verdicts: Vec<Verdict> = files.iter().map(|f| plan.rule.verdict(f)).collect();
        if verdicts.iter().all(|v| matches!(v, Verdict::Keep)) {
            continue;
        }
        if plan.dirty_days.contains(day) {
            merge_day(dir, plan, *day, files, next_file_id, &mut outcome)?;
            continue;
        }
        for (file, verdict) in files.iter().zip(verdicts) {
            match verdict {
                Verdict::Keep => {}
                Verdict::Drop => drop_file(file, &mut outcome),
                Verdict::Read => rewrite_file(dir, plan, file, next_file_id, &mut outcome)?,
            }
        }
    }
    Ok(outcome)
}

fn drop_file(file: &FileMeta, outcome: &mut Outcome) {
    outcome.removed.push(file.path.clone());
    outcome.rows_deleted += file.rows;
    outcome.files_dropped += 1;
}

/// Reads `time` and `device` first: most files a rule reads keep every row or lose every row.
fn rewrite_file(dir: &Path, plan: &TablePurge, file: &FileMeta, next: &mut u64, outcome: &mut Outcome) -> std::io::Result<()> {
    let path = dir.join(&file.path);
    let keys = crate::persist::read_columns(&path, &plan.schema, &[0, 1])?;
    let kept: usize = keys.iter().map(|b| plan.rule.keep_mask(b).true_count()).sum();
    if kept == file.rows as usize {
        outcome.marked.push((file.path.clone(), plan.rule.mark(file)));
        return Ok(());
    }
    if kept == 0 {
        drop_file(file, outcome);
        return Ok(());
    }
    let batches: Vec<RecordBatch> =
        crate::persist::read_file(&path, &plan.schema)?.iter().map(|b| align(&plan.schema, b)).collect();
    let all = concat_aligned(&plan.schema, &batches);
    let filtered = filter_record_batch(&all, &plan.rule.keep_mask(&all)).map_err(std::io::Error::other)?;
    write_kept(dir, plan, &filtered, next, outcome)?;
    outcome.removed.push(file.path.clone());
    outcome.rows_deleted += (all.num_rows() - filtered.num_rows()) as u64;
    outcome.files_rewritten += 1;
    Ok(())
}

/// A dirty day: every file read, the versions of each point merged, the rule applied, one file.
fn merge_day(
    dir: &Path,
    plan: &TablePurge,
    day: i64,
    files: &[FileMeta],
    next: &mut u64,
    outcome: &mut Outcome,
) -> std::io::Result<()> {
    let mut ordered: Vec<&FileMeta> = files.iter().collect();
    ordered.sort_by(|a, b| a.path.cmp(&b.path));
    let mut any_deleted = false;
    for file in &ordered {
        let keys = crate::persist::read_columns(&dir.join(&file.path), &plan.schema, &[0, 1])?;
        any_deleted |= keys.iter().any(|b| plan.rule.keep_mask(b).false_count() > 0);
    }
    if !any_deleted {
        outcome.marked.extend(ordered.iter().map(|f| (f.path.clone(), plan.rule.mark(f))));
        return Ok(());
    }
    let mut batches = Vec::new();
    for file in &ordered {
        let read = crate::persist::read_file(&dir.join(&file.path), &plan.schema)?;
        batches.extend(read.iter().map(|b| align(&plan.schema, b)));
    }
    let all = concat_aligned(&plan.schema, &batches);
    let merged = crate::points::last_write_wins(&all, &plan.keys).map_err(std::io::Error::other)?;
    let filtered = filter_record_batch(&merged, &plan.rule.keep_mask(&merged)).map_err(std::io::Error::other)?;
    if filtered.num_rows() > 0 {
        write_kept(dir, plan, &filtered, next, outcome)?;
    }
    outcome.removed.extend(ordered.iter().map(|f| f.path.clone()));
    outcome.rows_deleted += (merged.num_rows() - filtered.num_rows()) as u64;
    outcome.files_rewritten += ordered.len() as u64;
    outcome.cleaned_days.push(day);
    Ok(())
}

fn write_kept(dir: &Path, plan: &TablePurge, kept: &RecordBatch, next: &mut u64, outcome: &mut Outcome) -> std::io::Result<()> {
    let mut files = crate::persist::write_table(dir, &plan.table, kept, next)?;
    for file in &mut files {
        file.purge_mark = plan.rule.mark(file);
    }
    outcome.added.extend(files);
    Ok(())
}
