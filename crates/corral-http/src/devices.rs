//! `/api/v1/devices`: the inventory. Authorization (role, tenant scope) is the registry's job; the
//! handlers only parse and render.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::error::ApiResult;
use crate::extract::{Path, Query};
use crate::openapi::{Api, Operation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use corral_registry::{Device, DeviceFilter, DevicePage, DevicePatch, NewDevice};
use serde::Serialize;

const TAG: &str = "devices";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/devices",
        create,
        Operation::new(TAG, "Registers a device")
            .describe("Answers with the device's token, shown only this once.")
            .body::<NewDevice>()
            .returns::<DeviceCreated>(201, "Registered")
            .errors(&[404, 409]),
    )
    .get(
        "/api/v1/devices",
        list,
        Operation::new(TAG, "Lists devices, one page at a time")
            .describe("With `Accept: text/csv`, every matching device as CSV (all pages).")
            .query::<DeviceFilter>()
            .returns::<DeviceList>(200, "One page of devices")
            .returns_raw(200, "text/csv", "Every matching device, one per line"),
    )
    .get(
        "/api/v1/devices/{id}",
        show,
        Operation::new(TAG, "One device").path::<String>("id", "The device").returns::<DeviceShown>(200, "The device"),
    )
    .patch(
        "/api/v1/devices/{id}",
        update,
        Operation::new(TAG, "Changes a device (a merge patch)")
            .path::<String>("id", "The device")
            .body::<DevicePatch>()
            .returns::<Device>(200, "The device as changed")
            .errors(&[409]),
    )
    .delete(
        "/api/v1/devices/{id}",
        decommission,
        Operation::new(TAG, "Decommissions a device")
            .describe("Its credentials stop working at once; its record and data stay.")
            .path::<String>("id", "The device")
            .returns::<Device>(200, "The device, decommissioned")
            .errors(&[409]),
    )
    .post(
        "/api/v1/devices/{id}/token",
        rotate_token,
        Operation::new(TAG, "Gives a device a new token")
            .path::<String>("id", "The device")
            .query::<RotateParams>()
            .returns::<TokenRotated>(200, "The new token, shown only this once")
            .errors(&[409]),
    )
    .put(
        "/api/v1/devices/{id}/psk",
        set_psk,
        Operation::new(TAG, "Sets the device's pre-shared key for CoAP over DTLS")
            .describe("An empty body generates a random key. The key is in the answer this once only.")
            .path::<String>("id", "The device")
            .body::<SetPsk>()
            .body_optional()
            .returns::<PskSet>(200, "The key")
            .errors(&[409]),
    )
    .get(
        "/api/v1/devices/{id}/psk",
        show_psk,
        Operation::new(TAG, "Whether the device has a pre-shared key")
            .path::<String>("id", "The device")
            .returns::<PskState>(200, "Whether it has one (never the key)"),
    )
    .delete(
        "/api/v1/devices/{id}/psk",
        remove_psk,
        Operation::new(TAG, "Removes the device's pre-shared key")
            .path::<String>("id", "The device")
            .returns_nothing(204, "Removed")
            .errors(&[409]),
    )
}

/// A device just registered, with its token.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DeviceCreated {
    device: Device,
    /// The device's token: shown only this once.
    token: String,
}

/// A device as the API shows it when reading: its record and whether it is online now.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DeviceShown {
    #[serde(flatten)]
    device: Device,
    /// Connected now (MQTT, CoAP observe) or heard from within its profile's heartbeat.
    online: bool,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct DeviceList {
    devices: Vec<DeviceShown>,
    /// Devices matching the filter across all pages.
    total: u64,
    /// Pass as `after` (id order) or `offset` (any other order) for the next page; null on the last.
    next: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct TokenRotated {
    device: String,
    /// The new token: shown only this once.
    token: String,
    /// Until when the old token still works (RFC 3339), when `overlap_secs` was given.
    old_token_valid_until: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct PskSet {
    device: String,
    /// The PSK identity the device presents: its id.
    identity: String,
    /// The key as text, when it is printable.
    key: Option<String>,
    key_hex: String,
    /// True when the key was generated.
    generated: bool,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct PskState {
    device: String,
    identity: String,
    has_psk: bool,
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<DeviceCreated>)> {
    let new: NewDevice = parse_json(body)?;
    let (device, token) = state.registry.create_device(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(DeviceCreated { device, token })))
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
    let devices = devices.into_iter().zip(online).map(|(device, online)| DeviceShown { device, online }).collect();
    Ok(Json(DeviceList { devices, total, next }).into_response())
}

pub async fn show(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Json<DeviceShown>> {
    let device = state.registry.get_device(&caller, &id).await?;
    let online = state.online.online(&[device.scope_facts()]).await;
    Ok(Json(DeviceShown { device, online: online.first().copied().unwrap_or(false) }))
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

#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
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
) -> ApiResult<Json<TokenRotated>> {
    let token = state.registry.rotate_device_token_with_overlap(&caller, &id, params.overlap_secs).await?;
    let until = (params.overlap_secs > 0).then(|| {
        (chrono::Utc::now() + chrono::Duration::seconds(params.overlap_secs as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    Ok(Json(TokenRotated { device: id, token, old_token_valid_until: until }))
}

/// Body of `PUT /api/v1/devices/{id}/psk`: the factory's key as text (`key`) or in hex
/// (`key_hex`), or neither for a random one.
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
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
) -> ApiResult<Json<PskSet>> {
    let asked: SetPsk = crate::body::parse_json_or_default(body)?;
    let key = match (asked.key, asked.key_hex) {
        (Some(_), Some(_)) => return Err(crate::error::ApiError::bad_input("give key or key_hex, not both")),
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(h)) => Some(hex::decode(h.trim()).map_err(|e| crate::error::ApiError::bad_input(format!("key_hex: {e}")))?),
        (None, None) => None,
    };
    let generated = key.is_none();
    let key = state.registry.set_device_psk(&caller, &id, key).await?;
    let text = std::str::from_utf8(&key).ok().filter(|t| t.chars().all(|c| c.is_ascii_graphic())).map(str::to_string);
    Ok(Json(PskSet { identity: id.clone(), device: id, key: text, key_hex: hex::encode(&key), generated }))
}

/// Whether the device has a pre-shared key (the key itself is never shown again).
pub async fn show_psk(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PskState>> {
    let has_psk = state.registry.has_device_psk(&caller, &id).await?;
    Ok(Json(PskState { identity: id.clone(), device: id, has_psk }))
}

pub async fn remove_psk(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.registry.remove_device_psk(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
