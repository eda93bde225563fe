//! `POST /api/v1/ingest[/{table}]`: device telemetry over HTTP. The device authenticates with its
//! own token, or on HTTPS with its client certificate; the answer is 200 only once the data is
//! durable.

use crate::AppState;
use crate::auth::ClientCertificate;
use crate::body::read_body;
use crate::error::ApiResult;
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use crate::extract::{Path, Query};
use axum::http::HeaderMap;
use corral_ingest::decode::TelemetryFormat;
use corral_model::{Door, Envelope, TableName};
use serde::Deserialize;
use serde_json::{Value, json};
use crate::openapi::{Api, Operation};

const TAG: &str = "ingest";

pub(crate) fn routes(api: Api) -> Api {
    api
        .post("/api/v1/ingest", ingest_default, Operation::new(TAG, "TODO"))
        .post("/api/v1/ingest/{table}", ingest_table, Operation::new(TAG, "TODO"))
}

#[derive(Debug, Default, Deserialize)]
pub struct IngestParams {
    /// `json` (default) or `senml`; the Content-Type `application/senml+json` also selects SenML.
    format: Option<String>,
}

pub async fn ingest_default(
    State(state): State<AppState>,
    Query(params): Query<IngestParams>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    ingest(state, TableName::telemetry(), params, certificate, headers, body).await
}

pub async fn ingest_table(
    State(state): State<AppState>,
    Path(table): Path<String>,
    Query(params): Query<IngestParams>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    ingest(state, TableName::new(table)?, params, certificate, headers, body).await
}

async fn ingest(
    state: AppState,
    table: TableName,
    params: IngestParams,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    // Authenticate before reading the body: a stranger gets nothing buffered and learns nothing
    // from our parser.
    let device = crate::auth::device(&state, &headers, certificate.as_deref()).await?;
    let body = read_body(body, state.limits.max_body_bytes).await?;
    let received_at_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let format = match params.format.as_deref() {
        Some("senml") => TelemetryFormat::SenmlJson,
        _ => TelemetryFormat::from_content_type(content_type),
    };
    let batch = format.decode(&body, device.id.as_str(), &table, received_at_ns, &state.limits.decode)?;
    let envelope = Envelope { device: device.id, tenant: device.tenant, door: Door::Http, received_at_ns };
    let accepted = state.sink.submit(&envelope, vec![batch]).await?;
    Ok(Json(json!({ "table": table, "rows": accepted.rows, "values": accepted.values })))
}
