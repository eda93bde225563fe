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
use crate::extract::Path;
use crate::openapi::{Api, Operation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_commands::{CommandState, NewCommand};
use corral_model::{DeviceId, TenantId};
use corral_registry::{Target, select_devices};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const TAG: &str = "commands";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/command-jobs",
        create,
        Operation::new(TAG, "Sends the same command to a selection of devices, as one job")
            .describe(
                "Operators and admins only. Every field of `target` narrows (at least one is required); `where` \
                 is an SQL condition over the `devices` table. Only active devices the caller's tenant scope \
                 covers are selected, at most 100000 (more is a 400: narrow the target), and none is a 400. All \
                 commands are recorded in one transaction before the answer, then handed to the doors. The \
                 answer has the job's `Location`.",
            )
            .body::<JobRequest>()
            .returns::<JobCreated>(201, "The job, its commands recorded"),
    )
    .get(
        "/api/v1/command-jobs/{job}",
        show,
        Operation::new(TAG, "A job's progress: its commands counted by state")
            .describe("Follow one command with `GET /api/v1/commands?job=...`.")
            .path::<String>("job", "The job (`job_...`)")
            .returns::<JobProgress>(200, "The job's counts"),
    )
}

/// A job just created.
#[derive(Serialize, schemars::JsonSchema)]
pub struct JobCreated {
    /// The job's id: `job_` and 20 hex digits.
    job: String,
    /// Devices selected: one command each.
    devices: usize,
    counts: Counts,
}

/// A job's progress.
#[derive(Serialize, schemars::JsonSchema)]
pub struct JobProgress {
    job: String,
    counts: Counts,
    /// Commands in the job (those not yet removed by the retention of finished commands).
    total: u64,
}

/// Commands by state, `{"queued": 3, "succeeded": 1}`: only the states that have commands.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Counts(BTreeMap<&'static str, u64>);

impl Counts {
    fn new(counts: &BTreeMap<CommandState, u64>) -> Self {
        Counts(counts.iter().map(|(state, n)| (state.as_str(), *n)).collect())
    }
}

impl schemars::JsonSchema for Counts {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CommandCounts".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let count = json!({"type": "integer", "format": "uint64", "minimum": 1});
        let properties: serde_json::Map<String, Value> =
            CommandState::ALL.iter().map(|state| (state.as_str().to_string(), count.clone())).collect();
        schemars::json_schema!({
            "type": "object",
            "description": "Commands by state: only the states that have commands.",
            "properties": properties,
            "additionalProperties": false,
        })
    }
}

/// The most devices one job may address: a fleet-wide job in one transaction, bounded so a typo
/// in `where` cannot queue millions of commands.
pub const MAX_JOB_DEVICES: usize = 100_000;

/// Body of `POST /api/v1/command-jobs`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// What the devices dispatch on (1–128 bytes of printable text).
    name: String,
    /// What each device receives with the name (any JSON; default null).
    #[serde(default)]
    payload: Value,
    /// Seconds each device has to answer before its command expires: 1 to 604800 (7 days),
    /// default 300.
    #[schemars(range(min = 1, max = 604800))]
    timeout: Option<u64>,
    /// Which devices: every field given narrows, at least one is required.
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
    let location = format!("/api/v1/command-jobs/{job}");
    let body = JobCreated { job, devices: created.len(), counts: Counts::new(&counts) };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response())
}

pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(job): Path<String>,
) -> ApiResult<Json<JobProgress>> {
    let counts = state.tracker.job_counts(&job, scope(&caller)).await?;
    let total: u64 = counts.values().sum();
    if total == 0 {
        return Err(ApiError::new(corral_model::ErrorKind::NotFound, format!("no command job {job:?}")));
    }
    Ok(Json(JobProgress { job, counts: Counts::new(&counts), total }))
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
