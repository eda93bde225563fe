//! `POST /api/v1/ingest[/{table}]`: device telemetry over HTTP. The device authenticates with its
//! own token, or on HTTPS with its client certificate; the answer is 200 only once the data is
//! durable.

use crate::AppState;
use crate::auth::ClientCertificate;
use crate::body::read_body;
use crate::error::ApiResult;
use crate::extract::{Path, Query};
use crate::openapi::{Api, Auth, Operation};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use corral_ingest::decode::TelemetryFormat;
use corral_model::{Door, Envelope, TableName};
use serde::{Deserialize, Serialize};

const TAG: &str = "ingest";

const INGEST: &str = "The answer comes once the data is durable. The body's format follows the Content-Type: JSON \
    (`application/json`, the default: one object of fields, or an array of them, one row each; `ts` is the row's time, \
    RFC 3339 or Unix epoch milliseconds, else the time received; nested objects flatten with `.`), SenML JSON \
    (`application/senml+json`, or `format=senml`), CBOR (`application/cbor`) or SenML CBOR (`application/senml+cbor`). \
    All or nothing: a bad message anywhere is a 400 naming it, and nothing of the request is stored.";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/ingest",
        ingest_default,
        Operation::new(TAG, "Stores a device's telemetry in the `telemetry` table")
            .describe(INGEST)
            .auth(Auth::Device)
            .query::<IngestParams>()
            .body::<TelemetryBody>()
            .returns::<Ingested>(200, "Stored durably"),
    )
    .post(
        "/api/v1/ingest/{table}",
        ingest_table,
        Operation::new(TAG, "Stores a device's telemetry in a table of its choosing")
            .describe(INGEST)
            .auth(Auth::Device)
            .path::<TableName>("table", "The table, created on first write")
            .query::<IngestParams>()
            .body::<TelemetryBody>()
            .returns::<Ingested>(200, "Stored durably"),
    )
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct IngestParams {
    /// `senml` reads the body as SenML JSON whatever its Content-Type; any other value (or none)
    /// leaves the choice to the Content-Type.
    format: Option<String>,
}

/// What was stored.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Ingested {
    table: TableName,
    /// Rows stored.
    rows: usize,
    /// Field values stored, over all rows.
    values: usize,
}

/// A telemetry body in JSON, as the decoder reads it (it is read as bytes, not through serde):
/// one message or an array of them, or a SenML pack, which is an array of records too.
pub struct TelemetryBody;

impl schemars::JsonSchema for TelemetryBody {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TelemetryBody".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let message = serde_json::json!({
            "type": "object",
            "description": "One row: each member is a field (numbers are stored as floats; nested objects \
                flatten with `.`; arrays are stored as their JSON text; null leaves the field out). `time` and \
                `device` are reserved.",
            "properties": {
                "ts": {
                    "description": "The row's time: RFC 3339 (any offset) or Unix epoch milliseconds; absent or null, the time received.",
                    "type": ["string", "number", "null"],
                },
            },
            "minProperties": 1,
        });
        schemars::json_schema!({
            "description": "JSON telemetry: one message, or a non-empty array of messages (one row each). \
                A SenML pack (RFC 8428) is a non-empty array of records.",
            "anyOf": [
                message,
                { "type": "array", "items": { "type": "object" }, "minItems": 1 },
            ],
        })
    }
}

pub async fn ingest_default(
    State(state): State<AppState>,
    Query(params): Query<IngestParams>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Ingested>> {
    ingest(state, TableName::telemetry(), params, certificate, headers, body).await
}

pub async fn ingest_table(
    State(state): State<AppState>,
    Path(table): Path<String>,
    Query(params): Query<IngestParams>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Ingested>> {
    ingest(state, TableName::new(table)?, params, certificate, headers, body).await
}

async fn ingest(
    state: AppState,
    table: TableName,
    params: IngestParams,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Ingested>> {
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
    Ok(Json(Ingested { table, rows: accepted.rows, values: accepted.values }))
}
