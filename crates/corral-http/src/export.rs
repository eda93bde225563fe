//! `GET /api/v1/export?sql=...&format=parquet|csv`: a query's whole result as a file, written
//! while it is computed. The server holds one batch at a time (and, for Parquet, the row group
//! being filled), so an export of a hundred million rows needs no more memory than one of a
//! hundred, and there is no row limit. The caller's tenant scope holds as for `/api/v1/query`.
//!
//! The status line goes out before the first row is computed: a query that fails while running
//! ends the body early (the client sees an incomplete transfer, e.g. curl's exit code 18), and the
//! reason is logged. A query that cannot be planned is refused with 400 before anything is sent.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Deserialize;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Rows per Parquet row group: what the writer holds before it writes them out.
const ROW_GROUP_ROWS: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    sql: String,
    /// `csv` (the default) or `parquet`.
    format: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Csv,
    Parquet,
}

pub async fn export(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<ExportParams>,
) -> ApiResult<Response> {
    let format = match params.format.as_deref().unwrap_or("csv") {
        "csv" => Format::Csv,
        "parquet" => Format::Parquet,
        other => return Err(ApiError::bad_input(format!("format {other:?}: write csv or parquet"))),
    };
    let tenant = caller.tenant.as_ref().map(|t| t.as_str().to_string());
    let ctx = state.sql.session(tenant.as_deref()).await?;
    let df =
        ctx.sql_with_options(&params.sql, corral_services::read_only()).await.map_err(|e| ApiError::bad_input(e.to_string()))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.execute_stream().await.map_err(|e| ApiError::bad_input(e.to_string()))?;
    let (chunks, body) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(write_file(format, schema, batches, chunks));
    let body = futures::stream::unfold(body, |mut body| async move { body.recv().await.map(|chunk| (chunk, body)) });
    let (content_type, file) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "attachment; filename=\"export.csv\""),
        Format::Parquet => ("application/vnd.apache.parquet", "attachment; filename=\"export.parquet\""),
    };
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(file));
    Ok(response)
}

/// Encodes batches as they come and hands the bytes to the response; stops when the client
/// leaves (the channel closes) or a batch fails (the body is cut short).
async fn write_file(
    format: Format,
    schema: SchemaRef,
    mut batches: SendableRecordBatchStream,
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let pending = Pending::default();
    let mut writer = match FileWriter::new(format, schema, pending.clone()) {
        Ok(writer) => writer,
        Err(e) => return fail(&chunks, e).await,
    };
    while let Some(batch) = batches.next().await {
        if let Err(e) = batch.map_err(|e| e.to_string()).and_then(|batch| writer.write(&batch)) {
            return fail(&chunks, e).await;
        }
        let chunk = pending.take();
        if !chunk.is_empty() && chunks.send(Ok(chunk)).await.is_err() {
            return; // the client went away; dropping `batches` stops the query
        }
    }
    if let Err(e) = writer.finish() {
        return fail(&chunks, e).await;
    }
    let _ = chunks.send(Ok(pending.take())).await;
}

async fn fail(chunks: &mpsc::Sender<Result<Bytes, std::io::Error>>, reason: String) {
    tracing::warn!(error = %reason, "export cut short");
    let _ = chunks.send(Err(std::io::Error::other(reason))).await;
}

/// Boxed: each writer is hundreds of bytes, and only one is ever made per export.
enum FileWriter {
    Csv(Box<arrow::csv::Writer<Pending>>),
    Parquet(Box<ArrowWriter<Pending>>),
}

impl FileWriter {
    fn new(format: Format, schema: SchemaRef, out: Pending) -> Result<FileWriter, String> {
        match format {
            Format::Csv => {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.fZ".to_string())
                    .build(out);
                // The header, even for a result without rows.
                writer.write(&RecordBatch::new_empty(schema)).map_err(|e| e.to_string())?;
                Ok(FileWriter::Csv(Box::new(writer)))
            }
            Format::Parquet => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .build();
                let writer = ArrowWriter::try_new(out, schema, Some(properties)).map_err(|e| e.to_string())?;
                Ok(FileWriter::Parquet(Box::new(writer)))
            }
        }
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            FileWriter::Csv(writer) => writer.write(batch).map_err(|e| e.to_string()),
            FileWriter::Parquet(writer) => writer.write(batch).map_err(|e| e.to_string()),
        }
    }

    /// The Parquet footer (CSV has none).
    fn finish(&mut self) -> Result<(), String> {
        match self {
            FileWriter::Csv(_) => Ok(()),
            FileWriter::Parquet(writer) => writer.finish().map(|_| ()).map_err(|e| e.to_string()),
        }
    }
}

/// Bytes written and not yet sent: the writers write here, the loop above takes them.
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

impl Write for Pending {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
