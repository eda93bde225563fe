//! `POST /api/v1/query`: read-only SQL. JSON by default, CSV with `Accept: text/csv`.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::encode::{QueryAnswer, to_csv, to_json};
use crate::error::{ApiError, ApiResult};
use crate::openapi::{Api, Operation};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use corral_model::ErrorKind;
use serde::Deserialize;

const TAG: &str = "data";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/query",
        query,
        Operation::new(TAG, "Runs a read-only SQL query")
            .describe(
                "DataFusion SQL over the telemetry tables (schema `public`; `latest` holds each device's newest \
                 row) and the platform's own (`devices`, `certificates`, `alarms`, `twins`, `commands`, `campaigns`...); a tenant-scoped \
                 caller sees only its tenant's rows. Statements that change anything are refused (400). The \
                 JSON answer holds at most the server's row limit (`truncated` says more matched); with \
                 `Accept: text/csv` the answer is CSV, up to ten times that limit, with the header \
                 `x-corral-truncated: true` when cut. A query running longer than the server's timeout is a 503.",
            )
            .body::<QueryRequest>()
            .returns::<QueryAnswer>(200, "The result")
            .returns_raw(200, "text/csv", "The result as CSV, a header line first (with `Accept: text/csv`)"),
    )
}

/// Body of `POST /api/v1/query`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One read-only SQL statement.
    sql: String,
    /// Lower the row limit for this query (never above the server's).
    limit: Option<usize>,
}

pub async fn query(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let request: QueryRequest = parse_json(body)?;
    let csv = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    // CSV is for exports: it streams whatever matched, bounded only by the timeout and a larger cap.
    let server_max = if csv { state.limits.max_query_rows.saturating_mul(10) } else { state.limits.max_query_rows };
    let max_rows = request.limit.map_or(server_max, |l| l.min(server_max));
    let tenant = caller.tenant.as_ref().map(|t| t.as_str().to_string());
    let timeout = state.limits.query_timeout;
    let result = tokio::time::timeout(timeout, state.sql.query(&request.sql, tenant.as_deref(), max_rows))
        .await
        .map_err(|_| ApiError::new(ErrorKind::Unavailable, format!("query exceeded the {}s timeout", timeout.as_secs_f64())))??;
    if csv {
        let mut response = to_csv(&result)?.into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
        if result.truncated {
            response.headers_mut().insert("x-corral-truncated", HeaderValue::from_static("true"));
        }
        return Ok(response);
    }
    Ok(axum::Json(to_json(&result)).into_response())
}
