//! The device's side of tracked commands over HTTP, for devices that cannot hold a connection
//! open for MQTT or CoAP Observe: they poll.
//!
//! - `GET /api/v1/devices/{id}/commands/next?wait=<seconds>`: the oldest command the device has
//!   not received yet, as `{"id", "name", "payload"}` (the same body every door carries). The
//!   answer is the delivery: the command is marked `delivered` as it is handed over. With `wait`
//!   (at most 60 s) the request is held until a command arrives (a long poll); nothing by then is
//!   `204 No Content`.
//! - `POST /api/v1/devices/{id}/commands/{command_id}/response`: the device's answer,
//!   `{"status": "succeeded" | "failed" | "rejected", "payload", "reason"}` (all optional; an
//!   empty answer means succeeded). `200` with the command; `409` when it was final already
//!   (answered, or expired); `404` for a command that is not this device's.
//!
//! Both take the device's own credential (its token, or on HTTPS its client certificate), as
//! ingest does, and a device speaks only for itself.

use crate::AppState;
use crate::auth::ClientCertificate;
use crate::commands::patience;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query};
use crate::openapi::{Api, Auth, Operation};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_commands::{Answer, CommandState, DeviceCommand, TrackedCommand};
use corral_model::{DeviceId, Door};
use corral_services::DeviceCaller;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

const TAG: &str = "device";

pub(crate) fn routes(api: Api) -> Api {
    api.get(
        "/api/v1/devices/{id}/commands/next",
        next,
        Operation::new(TAG, "Takes the device's oldest command not yet received (a poll)")
            .describe(
                "For devices that cannot hold a connection open (MQTT, CoAP Observe). The answer is the \
                 delivery: the command is marked `delivered` as it is handed over, and the next poll gets the \
                 next one. With `wait` (at most 60 seconds) the request is held until a command arrives (a long \
                 poll); nothing by then, or none waiting without `wait`, is 204. A device may poll only its own \
                 commands (another device's id is a 403).",
            )
            .auth(Auth::Device)
            .path::<String>("id", "The device; its own id")
            .query::<PollParams>()
            .returns::<DeviceCommand<'static>>(200, "The command, now delivered")
            .returns_nothing(204, "No command waiting (within `wait`)"),
    )
    .post(
        "/api/v1/devices/{id}/commands/{command_id}/response",
        respond,
        Operation::new(TAG, "The device's answer to one of its commands")
            .describe(
                "Makes the command final (succeeded, failed or rejected), whatever door delivered it. A \
                 command that is final already (answered, or expired) is a 409: the late answer changes \
                 nothing. A command that is not this device's is a 404; another device's id in the path is a \
                 403. The body is read leniently: empty, or JSON without `status`, means succeeded, and a body \
                 that is not JSON is kept as text.",
            )
            .auth(Auth::Device)
            .path::<String>("id", "The device; its own id")
            .path::<String>("command_id", "The command (`cmd_...`)")
            .body::<Answer>()
            .returns::<TrackedCommand>(200, "The command, final")
            .errors(&[409]),
    )
}

/// `?wait=` of the poll, in seconds.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PollParams {
    /// Seconds to hold the request until a command arrives, at most 60 (default 0: answer at once).
    #[schemars(range(max = 60))]
    wait: Option<u64>,
}

pub async fn next(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<PollParams>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let device = own(crate::auth::device(&state, &headers, certificate.as_deref()).await?, &id)?;
    let deadline = Instant::now() + patience(params.wait.unwrap_or(0))?;
    // Listen before the first look, so a command created in between is heard, not missed.
    let mut changes = state.tracker.changes();
    loop {
        if let Some(command) = state.tracker.take_next(&device, Door::Http).await? {
            tracing::debug!(command = %command.id, %device, "command delivered to a polling device");
            return Ok(delivered(&command));
        }
        if !arrived(&mut changes, &device, deadline).await {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

/// Waits until something may be waiting for `device` (true), or the deadline (false).
async fn arrived(changes: &mut tokio::sync::broadcast::Receiver<TrackedCommand>, device: &DeviceId, deadline: Instant) -> bool {
    loop {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            // A new command for it, or one another door sent but did not deliver.
            Ok(Ok(changed)) if changed.device == *device && changed.state < CommandState::Delivered => return true,
            Ok(Ok(_)) => {}
            // Missed some: look in the ledger, which has the truth.
            Ok(Err(RecvError::Lagged(_))) => return true,
            // The tracker is gone (shutting down): nothing more will come.
            Ok(Err(RecvError::Closed)) | Err(_) => return false,
        }
    }
}

/// The body the device receives, as JSON.
fn delivered(command: &TrackedCommand) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], command.body()).into_response()
}

pub async fn respond(
    State(state): State<AppState>,
    Path((id, command_id)): Path<(String, String)>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<TrackedCommand>> {
    // Authenticate before reading the answer: a stranger learns nothing from our parser.
    let device = own(crate::auth::device(&state, &headers, certificate.as_deref()).await?, &id)?;
    let command = state.tracker.answer(&device, &command_id, &body?).await?;
    Ok(Json(command))
}

/// A device polls and answers only its own commands.
fn own(caller: DeviceCaller, id: &str) -> ApiResult<DeviceId> {
    if caller.id.as_str() != id {
        return Err(ApiError::forbidden(format!("device {} may not use the commands of device {id:?}", caller.id)));
    }
    Ok(caller.id)
}
