//! `/api/v1/exports`: scheduled exports of a table or a query to Parquet or CSV files in a
//! directory or an S3-compatible bucket (see `corral-exports`). Every role reads; admins create,
//! run and remove. An export created with a tenant-scoped token exports only that tenant's rows
//! and is seen only by that tenant's tokens (and unscoped ones). Changes are audited.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use crate::extract::Path;
use axum::http::StatusCode;
use corral_exports::ExportSpec;
use corral_registry::Principal;
use serde_json::{Value, json};
use crate::openapi::{Api, Operation};

const TAG: &str = "exports";

pub(crate) fn routes(api: Api) -> Api {
    api
        .get("/api/v1/exports", list, Operation::new(TAG, "TODO"))
        .post("/api/v1/exports", create, Operation::new(TAG, "TODO"))
        .get("/api/v1/exports/{name}", show, Operation::new(TAG, "TODO"))
        .delete("/api/v1/exports/{name}", remove, Operation::new(TAG, "TODO"))
        .post("/api/v1/exports/{name}/run", run, Operation::new(TAG, "TODO"))
}

fn scope(caller: &Principal) -> Option<&str> {
    caller.tenant.as_ref().map(|t| t.as_str())
}

fn require_admin(caller: &Principal) -> ApiResult<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("role {} may only read exports; admin only", caller.role)))
    }
}

async fn audit(state: &AppState, caller: &Principal, action: &str, name: &str, detail: Value) {
    if let Err(e) = state.registry.record_audit(caller, action, name, caller.tenant.as_ref(), detail).await {
        tracing::error!(action, name, error = %e, "audit entry not written");
    }
}

pub async fn list(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "exports": state.exports.exports(scope(&caller)).await })))
}

pub async fn show(State(state): State<AppState>, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "export": state.exports.export(&name, scope(&caller)).await? })))
}

/// `POST /api/v1/exports` with an [`ExportSpec`]; its first run starts at once.
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_admin(&caller)?;
    let spec: ExportSpec = parse_json(body)?;
    let export = state.exports.create(spec, scope(&caller), &caller.name).await?;
    audit(&state, &caller, "export.create", &export.spec.name, json!({ "spec": export.spec })).await;
    Ok((StatusCode::CREATED, Json(json!({ "export": export }))))
}

pub async fn remove(State(state): State<AppState>, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    require_admin(&caller)?;
    state.exports.remove(&name, scope(&caller)).await?;
    audit(&state, &caller, "export.remove", &name, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/exports/{name}/run`: exports what is new now; answers the run, with status 502
/// and the reason in `error` when it failed (the files written before the failure stay).
pub async fn run(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_admin(&caller)?;
    let run = state.exports.run_now(&name, scope(&caller)).await?;
    Ok(match &run.error {
        Some(error) => (StatusCode::BAD_GATEWAY, Json(json!({ "error": format!("export {name} failed: {error}"), "run": run }))),
        None => (StatusCode::OK, Json(json!({ "run": run }))),
    })
}
