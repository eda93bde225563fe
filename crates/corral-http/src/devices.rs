//! `/api/v1/devices`: the inventory. Authorization (role, tenant scope) is the registry's job; the
//! handlers only parse and render.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::error::ApiResult;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use corral_registry::{Device, DeviceFilter, DevicePage, DevicePatch, NewDevice};
use serde_json::{Value, json};

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new: NewDevice = parse_json(body)?;
    let (device, token) = state.registry.create_device(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(json!({ "device": device, "token": token }))))
}

/// One page as JSON, or with `Accept: text/csv` every matching device as CSV.
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(filter): Query<DeviceFilter>,
    headers: axum::http::HeaderMap,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let wants_csv = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        return crate::devices_csv::export(&state, &caller, filter).await;
    }
    let page = state.registry.list_devices(&caller, &filter).await?;
    let facts: Vec<_> = page.devices.iter().map(Device::scope_facts).collect();
    let online = state.online.online(&facts).await;
    let DevicePage { devices, total, next } = page;
    let devices: Vec<Value> = devices.into_iter().zip(online).map(|(d, online)| with_online(d, online)).collect();
    Ok(Json(json!({ "devices": devices, "total": total, "next": next })).into_response())
}

pub async fn show(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let device = state.registry.get_device(&caller, &id).await?;
    let online = state.online.online(&[device.scope_facts()]).await;
    Ok(Json(with_online(device, online.first().copied().unwrap_or(false))))
}

/// A device as the API shows it when reading: its record and whether it is online now.
fn with_online(device: Device, online: bool) -> Value {
    let mut value = serde_json::to_value(device).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("online".into(), online.into());
    }
    value
}

pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Device>> {
    let patch: DevicePatch = parse_json(body)?;
    Ok(Json(state.registry.update_device(&caller, &id, patch).await?))
}

pub async fn decommission(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Device>> {
    Ok(Json(state.registry.decommission_device(&caller, &id).await?))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct RotateParams {
    /// Seconds the old token keeps working (default 0: it stops at once).
    #[serde(default)]
    overlap_secs: u64,
}

pub async fn rotate_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(params): Query<RotateParams>,
) -> ApiResult<Json<Value>> {
    let token = state.registry.rotate_device_token_with_overlap(&caller, &id, params.overlap_secs).await?;
    let until = (params.overlap_secs > 0).then(|| {
        (chrono::Utc::now() + chrono::Duration::seconds(params.overlap_secs as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    Ok(Json(json!({ "device": id, "token": token, "old_token_valid_until": until })))
}

/// Body of `PUT /api/v1/devices/{id}/psk`: the factory's key as text (`key`) or in hex
/// (`key_hex`), or neither for a random one.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPsk {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_hex: Option<String>,
}

/// Sets the device's pre-shared key for CoAP over DTLS; the key is in the answer (a generated
/// one only this once), as text when it is printable and always in hex.
pub async fn set_psk(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let asked: SetPsk = crate::body::parse_json_or_default(body)?;
    let key = match (asked.key, asked.key_hex) {
        (Some(_), Some(_)) => return Err(crate::error::ApiError::bad_input("give key or key_hex, not both")),
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(h)) => Some(hex::decode(h.trim()).map_err(|e| crate::error::ApiError::bad_input(format!("key_hex: {e}")))?),
        (None, None) => None,
    };
    let generated = key.is_none();
    let key = state.registry.set_device_psk(&caller, &id, key).await?;
    let text = std::str::from_utf8(&key).ok().filter(|t| t.chars().all(|c| c.is_ascii_graphic()));
    Ok(Json(json!({ "device": id, "identity": id, "key": text, "key_hex": hex::encode(&key), "generated": generated })))
}

/// Whether the device has a pre-shared key (the key itself is never shown again).
pub async fn show_psk(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let has = state.registry.has_device_psk(&caller, &id).await?;
    Ok(Json(json!({ "device": id, "identity": id, "has_psk": has })))
}

pub async fn remove_psk(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.registry.remove_device_psk(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
