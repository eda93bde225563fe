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
use crate::extract::Query;
use crate::openapi::{Api, Operation};
use arrow::datatypes::SchemaRef;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use corral_exports::{FileWriter, Format, Pending};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::mpsc;

const TAG: &str = "data";

pub(crate) fn routes(api: Api) -> Api {
    api.get(
        "/api/v1/export",
        export,
        Operation::new(TAG, "Exports a query's whole result as a CSV or Parquet file")
            .describe(
                "Read-only SQL, within the caller's tenant scope as for `/api/v1/query`, with no row limit: the file \
                is written while the result is computed (`Content-Disposition: attachment; filename=\"export.csv\"` \
                or `export.parquet`). A query that cannot be planned is 400 before anything is sent; one that fails \
                while running ends the body early (an incomplete transfer), after the 200.",
            )
            .query::<ExportParams>()
            .returns_raw(200, "text/csv", "The result as CSV with a header line (`format=csv`)")
            .returns_raw(200, "application/vnd.apache.parquet", "The result as a Parquet file (`format=parquet`)")
            .answer_header(200, "Content-Disposition", "`attachment; filename=\"export.csv\"` (or `export.parquet`)"),
    )
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// A read-only SQL query.
    sql: String,
    /// `csv` (the default) or `parquet`.
    #[schemars(with = "Option<Format>")]
    format: Option<String>,
}

pub async fn export(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<ExportParams>,
) -> ApiResult<Response> {
    let format = Format::parse(params.format.as_deref().unwrap_or("csv")).map_err(ApiError::bad_input)?;
    let tenant = caller.tenant.as_ref().map(|t| t.as_str().to_string());
    let ctx = state.sql.session(tenant.as_deref()).await?;
    let df =
        ctx.sql_with_options(&params.sql, corral_services::read_only()).await.map_err(|e| ApiError::bad_input(e.to_string()))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.execute_stream().await.map_err(|e| ApiError::bad_input(e.to_string()))?;
    let (chunks, body) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(write_file(format, schema, batches, chunks));
    let body = futures::stream::unfold(body, |mut body| async move { body.recv().await.map(|chunk| (chunk, body)) });
    let file = format!("attachment; filename=\"export.{}\"", format.extension());
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    response.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::try_from(file).expect("an ASCII header"));
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
