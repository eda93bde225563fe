//! One export window: the query's rows streamed into a file that is uploaded in parts as it is
//! encoded, then listed in the export's `manifest.json`. A file appears whole or not at all (a
//! multipart upload, or a local staging file renamed at the end), and its name comes from its
//! window, so a run repeated after a crash overwrites it rather than duplicating rows.

use crate::{Export, FileWriter, Pending};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use corral_services::{SqlService, read_only};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Bytes per uploaded part (S3 needs at least 5 MiB for every part but the last).
const PART_BYTES: usize = 8 << 20;
/// Parts in flight at once, which bounds the memory an upload holds.
const PARTS_IN_FLIGHT: usize = 2;

/// An export's folder: the files and `manifest.json` of one export.
pub struct Target {
    pub store: Arc<dyn ObjectStore>,
    pub folder: ObjectPath,
}

/// One file of an export, as listed in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExportedFile {
    /// Relative to the export's folder, e.g. `dt=2026-12-07/20261207T000000Z-20261207T010000Z.parquet`.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// The window: rows with `from <= time < to` (RFC 3339).
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub from: String,
    /// The window's end (RFC 3339, exclusive).
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub to: String,
    /// When the file was written (RFC 3339).
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub written_at: String,
}

/// `manifest.json`: every file the export wrote, and up to when rows are exported.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub export: String,
    pub format: crate::Format,
    /// Every row with an older `time` is in a listed file (as of when it was exported).
    pub exported_through: Option<String>,
    pub files: Vec<ExportedFile>,
}

pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn compact(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).format("%Y%m%dT%H%M%SZ").to_string()
}

/// Exports the rows of `[from_ns, to_ns)`; `None` when there are none (no file is written).
pub async fn export_window(
    sql: &dyn SqlService,
    tenant: Option<&str>,
    export: &Export,
    target: &Target,
    (from_ns, to_ns): (i64, i64),
    now_ns: i64,
) -> Result<Option<ExportedFile>, String> {
    let ctx = sql.session(tenant).await.map_err(|e| e.message)?;
    let df = ctx.sql_with_options(&export.window_sql(from_ns, to_ns), read_only()).await.map_err(|e| e.to_string())?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut batches = df.execute_stream().await.map_err(|e| e.to_string())?;
    // Nothing is uploaded before the first row: an empty window leaves no file.
    let first = loop {
        match batches.next().await {
            None => return Ok(None),
            Some(Ok(batch)) if batch.num_rows() == 0 => continue,
            Some(batch) => break batch.map_err(|e| e.to_string())?,
        }
    };
    let day = chrono::DateTime::from_timestamp_nanos(from_ns).format("%Y-%m-%d");
    let relative = format!("dt={day}/{}-{}.{}", compact(from_ns), compact(to_ns), export.spec.format.extension());
    let path = ObjectPath::from(format!("{}/{relative}", target.folder));
    let upload = target.store.put_multipart(&path).await.map_err(|e| e.to_string())?;
    let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let pending = Pending::default();
    let mut writer = FileWriter::new(export.spec.format, schema, pending.clone())?;
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let mut next: Option<Result<RecordBatch, String>> = Some(Ok(first));
    let written: Result<(), String> = async {
        while let Some(batch) = next.take() {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            writer.write(&batch)?;
            let chunk = pending.take();
            bytes += chunk.len() as u64;
            parts.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(|e| e.to_string())?;
            parts.write(&chunk);
            next = batches.next().await.map(|b| b.map_err(|e| e.to_string()));
        }
        writer.finish()?;
        let tail = pending.take();
        bytes += tail.len() as u64;
        parts.write(&tail);
        Ok(())
    }
    .await;
    if let Err(e) = written {
        let _ = parts.abort().await;
        return Err(e);
    }
    parts.finish().await.map_err(|e| format!("completing the upload of {path}: {e}"))?;
    Ok(Some(ExportedFile {
        path: relative,
        rows,
        bytes,
        from: rfc3339(from_ns),
        to: rfc3339(to_ns),
        written_at: rfc3339(now_ns),
    }))
}

/// Adds `file` (replacing an entry of the same path) and the new high-water mark to the manifest.
pub async fn record(target: &Target, export: &Export, file: Option<ExportedFile>, through_ns: i64) -> Result<(), String> {
    let path = target.folder.clone().join("manifest.json");
    let mut manifest = match target.store.get(&path).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| format!("{path} is not an export manifest: {e}"))?
        }
        Err(object_store::Error::NotFound { .. }) => Manifest::default(),
        Err(e) => return Err(format!("reading {path}: {e}")),
    };
    manifest.export = export.spec.name.clone();
    manifest.format = export.spec.format;
    manifest.exported_through = Some(rfc3339(through_ns));
    if let Some(file) = file {
        manifest.files.retain(|f| f.path != file.path);
        manifest.files.push(file);
    }
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    target.store.put(&path, PutPayload::from(body)).await.map_err(|e| format!("writing {path}: {e}"))?;
    Ok(())
}
