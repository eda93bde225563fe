//! Tracked commands for applications: create one for a device and follow it to the device's
//! answer, whatever door the device uses.
//!
//! - `POST /api/v1/devices/{id}/commands` `{"name", "payload", "timeout", "wait"}`: records the
//!   command (durable when answered) and answers `201 Created` with it and its `Location`. With
//!   `wait` (seconds, at most 60) it answers like a direct method: `200` with the command once it
//!   is final (answered or expired), or `202` with the command as it is when the wait ran out.
//!   Operators and admins only, audited as `device.command`.
//! - `GET /api/v1/commands?device=&state=&job=&after=&limit=`: a page, oldest first; a full page
//!   has `next`, the `after` of the following one. `GET /api/v1/commands/{id}`: one command.
//!   Every role reads.
//!
//! Tenant scope: the device is read as the caller, so another tenant's device is a 404 exactly as
//! on `/devices/{id}`, and the tracker is asked in the caller's scope, so another tenant's
//! commands do not exist for it. Bulk jobs are in `command_jobs`; the device's own side (poll,
//! answer) in `device_commands`.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query};
use crate::openapi::{Api, Operation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_commands::{CommandError, CommandFilter, CommandState, MAX_PAGE, NewCommand, TrackedCommand};
use corral_model::{DeviceId, TenantId};
use corral_registry::Principal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

const TAG: &str = "commands";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/devices/{id}/commands",
        create,
        Operation::new(TAG, "Sends a tracked command to a device")
            .describe(
                "Operators and admins only. The command is recorded (durable) and handed to whichever door \
                 reaches the device (MQTT, CoAP, an HTTP poll); a device that is away gets it when it is back, \
                 until `timeout` passes and it expires. Without `wait` the answer is 201 at once. With `wait` \
                 (at most 60 seconds) the request is held like a direct method: 200 once the command is final \
                 (answered or expired), 202 with the command as it is when the wait ran out. Every answer has \
                 the command's `Location`.",
            )
            .path::<String>("id", "The device")
            .body::<CommandRequest>()
            .returns::<TrackedCommand>(201, "Recorded (no `wait`)")
            .returns::<TrackedCommand>(200, "Final within `wait`: answered or expired")
            .returns::<TrackedCommand>(202, "Not final when `wait` ran out: as it is now"),
    )
    .get(
        "/api/v1/commands",
        list,
        Operation::new(TAG, "Lists commands, oldest first, one page at a time")
            .describe("Commands of the caller's tenant scope; finished ones are kept for the configured retention.")
            .query::<ListParams>()
            .returns::<CommandPage>(200, "One page of commands"),
    )
    .get(
        "/api/v1/commands/{id}",
        show,
        Operation::new(TAG, "One command and everything that happened to it")
            .path::<String>("id", "The command (`cmd_...`)")
            .returns::<TrackedCommand>(200, "The command"),
    )
}

/// One page of commands.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CommandPage {
    commands: Vec<TrackedCommand>,
    /// Pass as `after` for the next page; null when this page is not full (the last).
    next: Option<String>,
}

/// How long a device has to answer when the caller does not say.
pub(crate) const DEFAULT_TIMEOUT_S: u64 = 300;
/// The longest a command may wait for its device: a week covers a device that sleeps over a
/// weekend, and bounds how long the ledger holds an open command.
pub(crate) const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;
/// The longest a request may be held open waiting (for an answer, or for a command to poll):
/// under the idle timeouts of common proxies.
pub(crate) const MAX_WAIT_S: u64 = 60;
const DEFAULT_PAGE: usize = 100;

/// The tracker's errors reach the client through the one shared vocabulary (`WireError`).
impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        ApiError(e.into())
    }
}

/// The tenant a caller is confined to, as the tracker takes it.
pub(crate) fn scope(caller: &Principal) -> Option<&str> {
    caller.tenant.as_ref().map(TenantId::as_str)
}

pub(crate) fn require_write(caller: &Principal, what: &str) -> ApiResult<()> {
    if caller.can_write() { Ok(()) } else { Err(ApiError::forbidden(format!("role {} may not {what}", caller.role))) }
}

/// `timeout` in seconds (default [`DEFAULT_TIMEOUT_S`]) as the tracker's milliseconds.
pub(crate) fn timeout_ms(timeout_s: Option<u64>) -> ApiResult<i64> {
    match timeout_s.unwrap_or(DEFAULT_TIMEOUT_S) {
        s @ 1..=MAX_TIMEOUT_S => Ok(i64::try_from(s * 1000).unwrap_or(i64::MAX)),
        s => Err(ApiError::bad_input(format!("timeout is 1 to {MAX_TIMEOUT_S} seconds (7 days), not {s}"))),
    }
}

/// A `wait` in seconds, at most [`MAX_WAIT_S`].
pub(crate) fn patience(wait_s: u64) -> ApiResult<Duration> {
    if wait_s > MAX_WAIT_S {
        return Err(ApiError::bad_input(format!("wait is at most {MAX_WAIT_S} seconds, not {wait_s}")));
    }
    Ok(Duration::from_secs(wait_s))
}

/// Where a command can be read back.
pub(crate) fn location(command_id: &str) -> String {
    format!("/api/v1/commands/{command_id}")
}

/// Body of `POST /api/v1/devices/{id}/commands`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// What the device dispatches on (1–128 bytes of printable text; `/` is allowed, the
    /// command's id is what topics and paths carry).
    name: String,
    /// What the device receives with the name (any JSON; default null).
    #[serde(default)]
    payload: Value,
    /// Seconds the device has to answer before the command expires: 1 to 604800 (7 days),
    /// default 300.
    #[schemars(range(min = 1, max = 604800))]
    timeout: Option<u64>,
    /// Seconds to hold the request open for the device's answer, at most 60.
    #[schemars(range(max = 60))]
    wait: Option<u64>,
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    require_write(&caller, "send commands")?;
    let request: CommandRequest = parse_json(body)?;
    let timeout_ms = timeout_ms(request.timeout)?;
    let patience = request.wait.map(patience).transpose()?;
    // Read as the caller: a device of another tenant is a 404, as everywhere.
    let device = state.registry.get_device(&caller, &id).await?;
    let new = NewCommand {
        device: device.id.clone(),
        tenant: device.tenant.clone(),
        name: request.name,
        payload: request.payload,
        timeout_ms,
        job: None,
        created_by: caller.name.clone(),
        key: None,
    };
    new.check().map_err(ApiError::bad_input)?;
    // Listening before the command exists, the wait hears every change of it without reading it back.
    let changes = state.tracker.changes();
    let command = state.tracker.create(new).await?;
    let detail = json!({ "command": command.name, "id": command.id });
    let audited = async {
        let audit = state.registry.record_audit(&caller, "device.command", device.id.as_str(), Some(&device.tenant), detail);
        if let Err(e) = audit.await {
            tracing::error!(device = %device.id, error = %e, "audit entry not written");
        }
    };
    let Some(patience) = patience else {
        audited.await;
        return Ok(answer(StatusCode::CREATED, command));
    };
    // The audit entry is written while the device works on the command, not before.
    let ((), waited) = tokio::join!(audited, state.tracker.wait_from(changes, command, scope(&caller), patience));
    let command = waited?;
    let status = if command.state.is_final() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok(answer(status, command))
}

/// The command as JSON with its `Location`.
fn answer(status: StatusCode, command: TrackedCommand) -> Response {
    (status, [(header::LOCATION, location(&command.id))], Json(command)).into_response()
}

/// `?device=&state=&job=&after=&limit=` of `GET /api/v1/commands`; every filter given narrows.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListParams {
    /// Only this device's commands.
    #[schemars(with = "Option<DeviceId>")]
    device: Option<String>,
    /// Only commands in this state.
    #[schemars(with = "Option<CommandState>")]
    state: Option<String>,
    /// Only this bulk job's commands.
    job: Option<String>,
    /// Only commands created after this one: `next` of the previous page (an unknown id starts
    /// at the first).
    after: Option<String>,
    /// Commands per page: 1 to 1000, default 100.
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<CommandPage>> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_input(format!("limit is 1 to {MAX_PAGE}, not {limit}")));
    }
    let filter = CommandFilter {
        device: params.device.map(DeviceId::new).transpose()?,
        state: params.state.map(|s| s.parse::<CommandState>()).transpose().map_err(ApiError::bad_input)?,
        job: params.job,
        after: params.after,
        limit,
    };
    let commands = state.tracker.list(&filter, scope(&caller)).await?;
    // A full page may have more behind it: `after=<next>` continues.
    let next = (commands.len() == limit).then(|| commands.last().map(|c| c.id.clone())).flatten();
    Ok(Json(CommandPage { commands, next }))
}

pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TrackedCommand>> {
    Ok(Json(state.tracker.get(&id, scope(&caller)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::status_of;
    use corral_model::ErrorKind;

    #[test]
    fn timeouts_default_to_five_minutes_and_stay_within_a_week() {
        assert_eq!(timeout_ms(None).unwrap(), 300_000);
        assert_eq!(timeout_ms(Some(1)).unwrap(), 1_000);
        assert_eq!(timeout_ms(Some(MAX_TIMEOUT_S)).unwrap(), 604_800_000);
        assert_eq!(timeout_ms(Some(0)).unwrap_err().0.kind, ErrorKind::BadInput);
        assert_eq!(timeout_ms(Some(MAX_TIMEOUT_S + 1)).unwrap_err().0.kind, ErrorKind::BadInput);
        assert_eq!(patience(60).unwrap(), Duration::from_secs(60));
        assert!(patience(61).is_err());
    }

    #[test]
    fn command_errors_keep_their_status() {
        let status = |e: CommandError| status_of(ApiError::from(e).0.kind);
        assert_eq!(status(CommandError::NotFound("x".into())), StatusCode::NOT_FOUND);
        assert_eq!(status(CommandError::BadInput("x".into())), StatusCode::BAD_REQUEST);
        assert_eq!(status(CommandError::Final("x".into())), StatusCode::CONFLICT);
        assert_eq!(status(CommandError::Storage("x".into())), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_command_request_refuses_unknown_fields() {
        let parse = |s: &str| serde_json::from_str::<CommandRequest>(s);
        let ok = parse(r#"{"name": "valve/open", "payload": {"to": 80}, "timeout": 30, "wait": 5}"#).unwrap();
        assert_eq!((ok.name.as_str(), ok.timeout, ok.wait), ("valve/open", Some(30), Some(5)));
        assert!(parse(r#"{"name": "reboot"}"#).unwrap().payload.is_null());
        assert!(parse(r#"{"name": "reboot", "qos": 1}"#).is_err());
    }
}
