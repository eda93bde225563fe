//! Bulk commands: the same command to a selection of devices, as one job whose progress is counted
//! by state.
//!
//! - `POST /api/v1/command-jobs` `{"name", "payload", "timeout", "target": {"profile", "site",
//!   "tag", "tenant", "where"}}`: every field of `target` narrows (at least one is required);
//!   `where` is an SQL condition over the `devices` table (`json_get_str(attributes, 'zone') =
//!   'north'`). Only active devices are selected, at most [`MAX_JOB_DEVICES`]. All commands are
//!   recorded in one transaction, then handed to the doors. Operators and admins only, audited as
//!   `command.job`; answers `201` with `{"job", "devices", "counts"}`.
//! - `GET /api/v1/command-jobs/{job}`: `{"job", "counts": {"queued": 3, ...}, "total"}`.
//!
//! The selection ([`corral_registry::Target`]) runs as the caller: the registry listing and the
//! SQL engine both apply its tenant scope, so a scoped token can only ever reach its own tenant's
//! devices.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::commands::{require_write, scope, timeout_ms};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use crate::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_commands::{CommandState, NewCommand};
use corral_model::{DeviceId, TenantId};
use corral_registry::{Target, select_devices};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use crate::openapi::{Api, Operation};

const TAG: &str = "commands";

pub(crate) fn routes(api: Api) -> Api {
    api
        .post("/api/v1/command-jobs", create, Operation::new(TAG, "TODO"))
        .get("/api/v1/command-jobs/{job}", show, Operation::new(TAG, "TODO"))
}

/// The most devices one job may address: a fleet-wide job in one transaction, bounded so a typo
/// in `where` cannot queue millions of commands.
pub const MAX_JOB_DEVICES: usize = 100_000;

/// Body of `POST /api/v1/command-jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    name: String,
    #[serde(default)]
    payload: Value,
    timeout: Option<u64>,
    target: Target,
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    require_write(&caller, "send commands")?;
    let request: JobRequest = parse_json(body)?;
    let timeout_ms = timeout_ms(request.timeout)?;
    let job = corral_commands::model::new_job_id();
    let template = |device: DeviceId, tenant: TenantId| NewCommand {
        device,
        tenant,
        name: request.name.clone(),
        payload: request.payload.clone(),
        timeout_ms,
        job: Some(job.clone()),
        created_by: caller.name.clone(),
        key: None,
    };
    // Check the name before selecting: a bad name should not cost a fleet-wide scan.
    template(DeviceId::new("probe")?, TenantId::default_tenant()).check().map_err(ApiError::bad_input)?;
    let devices = select_devices(state.registry.as_ref(), state.sql.as_ref(), &caller, &request.target, MAX_JOB_DEVICES).await?;
    if devices.is_empty() {
        return Err(ApiError::bad_input("the target selects no device (only active devices are selected)"));
    }
    let commands: Vec<NewCommand> = devices.into_iter().map(|(device, tenant)| template(device, tenant)).collect();
    let created = state.tracker.create_many(commands).await?;
    let counts = state.tracker.job_counts(&job, scope(&caller)).await?;
    let detail = json!({ "name": request.name, "devices": created.len(), "target": request.target });
    if let Err(e) = state.registry.record_audit(&caller, "command.job", &job, caller.tenant.as_ref(), detail).await {
        tracing::error!(%job, error = %e, "audit entry not written");
    }
    tracing::info!(%job, devices = created.len(), by = %caller.name, "command job created");
    let body = json!({ "job": job, "devices": created.len(), "counts": counts_json(&counts) });
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/api/v1/command-jobs/{job}"))], Json(body)).into_response())
}

pub async fn show(State(state): State<AppState>, Caller(caller): Caller, Path(job): Path<String>) -> ApiResult<Json<Value>> {
    let counts = state.tracker.job_counts(&job, scope(&caller)).await?;
    let total: u64 = counts.values().sum();
    if total == 0 {
        return Err(ApiError::new(corral_model::ErrorKind::NotFound, format!("no command job {job:?}")));
    }
    Ok(Json(json!({ "job": job, "counts": counts_json(&counts), "total": total })))
}

/// `{"queued": 3, "succeeded": 1}`: the states that have commands.
fn counts_json(counts: &BTreeMap<CommandState, u64>) -> Value {
    Value::Object(counts.iter().map(|(state, n)| (state.as_str().to_string(), json!(n))).collect::<Map<_, _>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_request_refuses_unknown_fields_and_names_where() {
        let job: JobRequest =
            serde_json::from_str(r#"{"name": "reboot", "target": {"where": "site = 'x'", "profile": "meter"}}"#).unwrap();
        assert_eq!((job.target.condition.as_deref(), job.target.profile.as_deref()), (Some("site = 'x'"), Some("meter")));
        assert!(serde_json::from_str::<JobRequest>(r#"{"name": "x", "target": {"zone": "n"}}"#).is_err());
        assert!(serde_json::from_str::<JobRequest>(r#"{"name": "x", "target": {}, "devices": []}"#).is_err());
    }
}
