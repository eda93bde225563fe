//! `POST /api/v1/devices/{id}/commands`: send a command to a device, whatever door it uses (MQTT
//! `devices/<id>/commands/<name>`, CoAP Observe on `devices/<id>/commands`).
//!
//! Body `{"name": "reboot", "payload": {...}}`; the device receives the payload as JSON. The
//! answer is `202 Accepted` once a door took the command: delivery is not tracked yet, so a
//! device that is offline and has no persistent session does not get it. Operators and admins
//! may send; a tenant-scoped token only to its tenant's devices (others do not exist for it).

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use corral_services::Command;
use serde_json::{Value, json};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCommand {
    /// The command's name: the last level of its MQTT topic.
    name: String,
    #[serde(default)]
    payload: Value,
}

pub async fn send(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new: NewCommand = parse_json(body)?;
    if new.name.is_empty() || new.name.len() > 128 || new.name.contains(['/', '+', '#']) {
        return Err(ApiError::bad_input("command name must be 1-128 characters without /, + or #"));
    }
    if !caller.can_write() {
        return Err(ApiError::forbidden(format!("role {} may not send commands", caller.role)));
    }
    // Read as the caller: a device of another tenant is a 404, as everywhere.
    let device = state.registry.get_device(&caller, &id).await?;
    let payload = if new.payload.is_null() { Vec::new() } else { new.payload.to_string().into_bytes() };
    let command = Command::new(device.id.clone(), Some(device.tenant.clone()), new.name.as_str(), payload, None);
    state.commands.send(command).await?;
    let detail = json!({ "command": new.name });
    if let Err(e) = state.registry.record_audit(&caller, "device.command", device.id.as_str(), Some(&device.tenant), detail).await
    {
        tracing::error!(device = %device.id, error = %e, "audit entry not written");
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "device": device.id, "name": new.name, "state": "sent" }))))
}
