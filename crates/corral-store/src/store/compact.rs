//! Compaction: a table's day partition that has collected many small Parquet files (one per
//! snapshot) is rewritten as one, so queries open few files. A dirty day (one whose files may
//! hold two versions of a point, see `points.rs`) is rewritten whole, its versions merged, and
//! is clean again. Replaced files are committed out of the manifest at once but deleted only
//! after a grace period, because a query that took its snapshot just before may still be about
//! to read them.

use super::{Store, StoreError};
use crate::buffer::{align, concat_aligned};
use crate::manifest::FileMeta;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One merge: these files of one table and day become one file.
struct Plan {
    table: String,
    schema: SchemaRef,
    files: Vec<FileMeta>,
    /// For a dirty day: the day, and the columns that identify a point. The plan then holds
    /// every file of the day, oldest first.
    merge_versions: Option<(i64, Vec<usize>)>,
}

impl Store {
    /// Merges every partition holding at least `compact_min_files` files (smallest first, up to
    /// `compact_max_bytes` of Parquet per merge). Returns how many files were replaced.
    pub async fn compact(&self) -> Result<usize, StoreError> {
        let one_at_a_time = self.inner.persist_lock.clone().lock_owned().await;
        let store = self.clone();
        tokio::spawn(async move {
            let _held_until_done = one_at_a_time;
            store.compact_locked().await
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)?
    }

    async fn compact_locked(&self) -> Result<usize, StoreError> {
        let plans = self.plan_compaction();
        if plans.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let dir = self.inner.config.dir.clone();
        let mut next_file_id = self.state().manifest.next_file_id;
        let first_id = next_file_id;
        let (results, next) = tokio::task::spawn_blocking(move || {
            let mut results = Vec::new();
            for plan in plans {
                match merge(&dir, &plan, &mut next_file_id) {
                    Ok(new_files) => results.push((plan, new_files)),
                    Err(e) => return Err((e, next_file_id)),
                }
            }
            Ok((results, next_file_id))
        })
        .await
        .expect("compaction task does not panic")
        .map_err(|(e, next)| {
            self.state().manifest.next_file_id = next.max(first_id);
            StoreError::Io { context: "compacting Parquet files".into(), source: e }
        })?;

        let mut manifest = self.state().manifest.clone();
        let mut replaced = Vec::new();
        for (plan, new_files) in results {
            let table = manifest.tables.entry(plan.table.clone()).or_default();
            table.files.retain(|f| !plan.files.iter().any(|old| old.path == f.path));
            table.files.extend(new_files);
            if let Some((day, _)) = plan.merge_versions {
                table.dirty_days.remove(&day);
            }
            replaced.extend(plan.files.into_iter().map(|f| f.path));
        }
        manifest.next_file_id = next;
        let dir = self.inner.config.dir.clone();
        let saved = manifest.clone();
        tokio::task::spawn_blocking(move || saved.save(&dir))
            .await
            .expect("manifest save does not panic")
            .map_err(StoreError::io("committing manifest.json after compaction"))?;
        let count = replaced.len();
        {
            let mut state = self.state();
            state.manifest = manifest;
            let now = Instant::now();
            state.retired.extend(replaced.into_iter().map(|p| (self.inner.config.dir.join(p), now)));
        }
        tracing::info!(files = count, ms = started.elapsed().as_millis() as u64, "compacted Parquet files");
        Ok(count)
    }

    fn plan_compaction(&self) -> Vec<Plan> {
        let (min_files, max_bytes) = (self.inner.config.compact_min_files, self.inner.config.compact_max_bytes);
        let state = self.state();
        let mut plans = Vec::new();
        for (name, table) in &state.manifest.tables {
            let Some(live) = state.tables.get(name) else { continue };
            let schema = live.schema.arrow();
            let mut partitions: BTreeMap<&str, Vec<&FileMeta>> = BTreeMap::new();
            for file in &table.files {
                let partition = file.path.rsplit_once('/').map_or("", |(dir, _)| dir);
                partitions.entry(partition).or_default().push(file);
            }
            // Dirty days first, whole: file names grow with each snapshot, so path order is
            // write order, and the merge keeps the last version of each point.
            partitions.retain(|_, files| {
                let day = files[0].min_time_ns.div_euclid(crate::persist::NANOS_PER_DAY);
                if !table.dirty_days.contains(&day) {
                    return true;
                }
                files.sort_by(|a, b| a.path.cmp(&b.path));
                let files = files.iter().map(|f| (*f).clone()).collect();
                let merge_versions = Some((day, live.schema.key_columns()));
                plans.push(Plan { table: name.clone(), schema: schema.clone(), files, merge_versions });
                false
            });
            for mut files in partitions.into_values().filter(|f| f.len() >= min_files) {
                files.sort_by_key(|f| f.size_bytes);
                let mut total = 0;
                let chosen: Vec<FileMeta> = files
                    .into_iter()
                    .take_while(|f| {
                        total += f.size_bytes;
                        total <= max_bytes
                    })
                    .cloned()
                    .collect();
                if chosen.len() >= 2 {
                    plans.push(Plan { table: name.clone(), schema: schema.clone(), files: chosen, merge_versions: None });
                }
            }
        }
        plans
    }

    /// Deletes replaced files whose grace period is over.
    pub fn remove_retired(&self) {
        let grace = self.inner.config.retired_grace;
        let expired: Vec<PathBuf> = {
            let mut state = self.state();
            let (old, keep): (Vec<_>, Vec<_>) = state.retired.drain(..).partition(|(_, at)| at.elapsed() >= grace);
            state.retired = keep;
            old.into_iter().map(|(p, _)| p).collect()
        };
        for path in expired {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "could not delete a compacted file; a restart removes it");
            }
        }
    }
}

fn merge(dir: &Path, plan: &Plan, next_file_id: &mut u64) -> std::io::Result<Vec<FileMeta>> {
    let mut batches: Vec<RecordBatch> = Vec::new();
    for file in &plan.files {
        // Older files lack columns added since: widen them (columns only ever append).
        let read = crate::persist::read_file(&dir.join(&file.path), &plan.schema)?;
        batches.extend(read.iter().map(|batch| align(&plan.schema, batch)));
    }
    let mut all = concat_aligned(&plan.schema, &batches);
    if let Some((_, keys)) = &plan.merge_versions {
        all = crate::points::last_write_wins(&all, keys).map_err(std::io::Error::other)?;
    }
    crate::persist::write_table(dir, &plan.table, &all, next_file_id)
}
