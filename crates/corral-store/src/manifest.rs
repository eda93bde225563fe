//! The manifest: the one file that says which Parquet files hold which table's data, each table's
//! columns, and up to which WAL segment everything is persisted. Replaced atomically (write, fsync,
//! rename, fsync the directory), so a crash leaves either the old or the new snapshot, never half.

use crate::schema::Column;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "manifest.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// Every WAL record with a sequence number below this is in a Parquet file listed here.
    pub wal_floor: u64,
    pub next_file_id: u64,
    pub tables: BTreeMap<String, TableManifest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableManifest {
    pub columns: Vec<Column>,
    pub files: Vec<FileMeta>,
    /// UTC days (days since 1970-01-01) whose files may hold two versions of a point: queries
    /// merge them until compaction rewrites the day as one merged file (see `points.rs`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub dirty_days: std::collections::BTreeSet<i64>,
    /// The file with each device's latest row as of this snapshot (relative path), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
    /// For a table a rollup reads: where rows landed that the rollup has not taken yet (see
    /// `Store::changes`), kept here once those rows leave the WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<std::collections::BTreeSet<i64>>,
}

/// One persisted Parquet file: a table's rows of one UTC day from one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileMeta {
    /// Relative to the store's directory.
    pub path: String,
    pub size_bytes: u64,
    pub rows: u64,
    pub values: u64,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    /// What the retention rule last checked against this file meant for it (see
    /// `store/purge.rs`): the same mark again means nothing to delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_mark: Option<u64>,
}

impl Manifest {
    pub fn load(dir: &Path) -> std::io::Result<Manifest> {
        match std::fs::read(dir.join(FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", dir.join(FILE).display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Manifest { version: 1, wal_floor: 1, next_file_id: 1, tables: BTreeMap::new() })
            }
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).expect("manifest serializes"))?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))?;
        sync_dir(dir)
    }

    /// Deletes Parquet files the manifest does not list: leftovers of a snapshot that crashed
    /// before its manifest was committed (their rows are still in the WAL and will be replayed).
    pub fn remove_orphans(&self, dir: &Path) -> std::io::Result<usize> {
        let listed: std::collections::HashSet<PathBuf> = self
            .tables
            .values()
            .flat_map(|t| t.files.iter().map(|f| dir.join(&f.path)).chain(t.latest.iter().map(|p| dir.join(p))))
            .collect();
        let mut removed = 0;
        let mut stack = vec![dir.join("tables")];
        while let Some(d) = stack.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if !listed.contains(&path) {
                    tracing::warn!(file = %path.display(), "removing file of an unfinished snapshot");
                    std::fs::remove_file(&path)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
