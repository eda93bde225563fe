//! `/api/v1/exports`: scheduled exports of a table or a query to Parquet or CSV files in a
//! directory or an S3-compatible bucket (see `corral-exports`). Every role reads; admins create,
//! run and remove. An export created with a tenant-scoped token exports only that tenant's rows
//! and is seen only by that tenant's tokens (and unscoped ones). Changes are audited.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::openapi::{Api, Operation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use corral_exports::{ExportSpec, ExportStatus, Run};
use corral_registry::Principal;
use serde::Serialize;
use serde_json::{Value, json};

const TAG: &str = "exports";

pub(crate) fn routes(api: Api) -> Api {
    api.get(
        "/api/v1/exports",
        list,
        Operation::new(TAG, "Lists scheduled exports")
            .describe("A scoped token sees its own tenant's exports only.")
            .returns::<ExportList>(200, "Every export and where it stands"),
    )
    .post(
        "/api/v1/exports",
        create,
        Operation::new(TAG, "Creates a scheduled export")
            .describe(
                "Every `every`, the rows of `table` (or of the query `sql`) that are new since the last run, one file \
                per UTC day under `destination`, listed in the export's `manifest.json`. The query is planned now (a \
                typo is 400); its first run starts at once. Created with a tenant-scoped token, it exports only that \
                tenant's rows. 409 when an export of that name exists. Admins only; audited as `export.create`.",
            )
            .body::<ExportSpec>()
            .returns::<ExportShown>(201, "Created")
            .errors(&[409]),
    )
    .get(
        "/api/v1/exports/{name}",
        show,
        Operation::new(TAG, "One scheduled export and its latest runs")
            .path::<String>("name", "The export")
            .returns::<ExportShown>(200, "The export and where it stands"),
    )
    .delete(
        "/api/v1/exports/{name}",
        remove,
        Operation::new(TAG, "Removes a scheduled export")
            .describe("The files it wrote stay. Admins only; audited as `export.remove`.")
            .path::<String>("name", "The export")
            .returns_nothing(204, "Removed"),
    )
    .post(
        "/api/v1/exports/{name}/run",
        run,
        Operation::new(TAG, "Runs a scheduled export now")
            .describe(
                "Exports what is new now, whatever its schedule (waiting for a run under way to end), and answers \
                how the run went: 502 with the reason when it failed, the files written before the failure staying \
                exported. Admins only.",
            )
            .path::<String>("name", "The export")
            .returns::<RunDone>(200, "The run succeeded")
            .returns::<RunFailed>(502, "The run failed (the destination or the query); the reason is in `error`"),
    )
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ExportList {
    exports: Vec<ExportStatus>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ExportShown {
    export: ExportStatus,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct RunDone {
    run: Run,
}

/// A run that failed.
#[derive(Serialize, schemars::JsonSchema)]
pub struct RunFailed {
    /// `export <name> failed: <reason>`.
    error: String,
    run: Run,
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

pub async fn list(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<ExportList>> {
    Ok(Json(ExportList { exports: state.exports.exports(scope(&caller)).await }))
}

pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ExportShown>> {
    Ok(Json(ExportShown { export: state.exports.export(&name, scope(&caller)).await? }))
}

/// `POST /api/v1/exports` with an [`ExportSpec`]; its first run starts at once.
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<ExportShown>)> {
    require_admin(&caller)?;
    let spec: ExportSpec = parse_json(body)?;
    let export = state.exports.create(spec, scope(&caller), &caller.name).await?;
    audit(&state, &caller, "export.create", &export.spec.name, json!({ "spec": export.spec })).await;
    Ok((StatusCode::CREATED, Json(ExportShown { export })))
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
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    require_admin(&caller)?;
    let run = state.exports.run_now(&name, scope(&caller)).await?;
    Ok(match &run.error {
        Some(error) => {
            let error = format!("export {name} failed: {error}");
            (StatusCode::BAD_GATEWAY, Json(RunFailed { error, run })).into_response()
        }
        None => (StatusCode::OK, Json(RunDone { run })).into_response(),
    })
}
