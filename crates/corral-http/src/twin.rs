//! `/api/v1/devices/{id}/twin`: the device twin over HTTP, for applications and for the device.
//!
//! - `GET .../twin`: the whole twin (desired with its version, reported, delta). An API token or
//!   console session reads any device its scope covers; a device token reads its own twin only.
//!   `GET .../twin?since=N`: only what changed in desired since version N (the patches, or the
//!   whole document when they are no longer kept), for a device catching up.
//! - `PATCH .../twin/desired`: an RFC 7386 merge patch from an operator or admin, with optional
//!   `If-Match: <version>` (412 when the desired document moved on). Answers with the new version
//!   and an `ETag`, and is audited as `twin.desired`.
//! - `PATCH .../twin/reported`: the device's own merge patch (`null` deletes a key), answered 200
//!   only after the store returned, i.e. once it is durable.
//!
//! Tenant scope comes from the registry: an application first reads the device as itself, so
//! another tenant's device is a 404 exactly as on `/devices/{id}`. The twin is created lazily on
//! first use, because the registry does not yet call the twin store when it creates a device.

use crate::AppState;
use crate::auth::{Caller, ClientCertificate};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query};
use crate::openapi::{Api, Auth, Operation};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_model::DeviceId;
use corral_registry::{DEVICE_TOKEN_PREFIX, Device, Principal};
use corral_services::DeviceCaller;
use corral_twin::{DesiredChanges, Document, Twin, TwinDocument, TwinError};
use serde::Serialize;
use serde_json::{Value, json};

const TAG: &str = "twins";

pub(crate) fn routes(api: Api) -> Api {
    api.get(
        "/api/v1/devices/{id}/twin",
        show,
        Operation::new(TAG, "A device's twin: desired, reported and the delta")
            .describe(
                "An application reads any device its scope covers; a device reads only its own twin (another \
                 device's id is a 403). The whole twin carries the desired version as its `ETag`. With \
                 `since=N`, only what changed in desired since version N: the patches in order, or the whole \
                 desired document when they are no longer kept (or N is ahead of the server).",
            )
            .auth(Auth::ApiOrDevice)
            .path::<String>("id", "The device")
            .query::<Since>()
            .returns::<TwinAnswer>(200, "The twin, or with `since` the desired changes"),
    )
    .patch(
        "/api/v1/devices/{id}/twin/desired",
        patch_desired,
        Operation::new(TAG, "Changes a device's desired document (a merge patch)")
            .describe(
                "Operators and admins only. An RFC 7386 merge patch of the device's own desired keys: `null` \
                 deletes a key (a profile default then shows through again). A patch that changes nothing \
                 makes no new version. With `If-Match` the patch applies only to that version (412 when the \
                 desired document moved on). The answer carries the new version as its `ETag`. The device \
                 hears of the new version on the doors it uses.",
            )
            .path::<String>("id", "The device")
            .header("If-Match", "The desired version the patch was made against: `3`, `\"3\"` or `W/\"3\"` (the `ETag` read); `*` or absent: whatever the current one is.")
            .body::<Document>()
            .returns::<DesiredPatched>(200, "The new effective desired document and its version")
            .errors(&[412]),
    )
    .patch(
        "/api/v1/devices/{id}/twin/reported",
        patch_reported,
        Operation::new(TAG, "The device reports its state (a merge patch)")
            .describe(
                "An RFC 7386 merge patch of the reported document from the device itself (another device's id \
                 is a 403): `null` deletes a key. Answered once the change is durable. A patch that changes \
                 nothing makes no new version.",
            )
            .auth(Auth::Device)
            .path::<String>("id", "The device; its own id")
            .body::<Document>()
            .returns::<ReportedPatched>(200, "The new reported document and its version"),
    )
}

/// `GET .../twin`: the whole twin, or with `?since=N` the desired changes since version N.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum TwinAnswer {
    /// The whole twin (without `since`).
    Twin(Twin),
    /// What changed in desired since version `since` (with `since`).
    Changes(DesiredChanges),
}

/// A device's desired document just patched.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DesiredPatched {
    device: DeviceId,
    /// The desired version now, also in the `ETag`.
    version: u64,
    /// The effective desired document (profile defaults with the device's overrides).
    desired: TwinDocument,
}

/// A device's reported document just patched.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ReportedPatched {
    device: DeviceId,
    /// The reported version now.
    version: u64,
    reported: TwinDocument,
}

/// A twin call's failure. Kept apart from [`ApiError`] only because a stale `If-Match` is HTTP's
/// own 412, where the shared error vocabulary's `Conflict` means 409 on every other route.
pub enum TwinFailure {
    Api(ApiError),
    StaleVersion(String),
}

impl From<ApiError> for TwinFailure {
    fn from(e: ApiError) -> Self {
        TwinFailure::Api(e)
    }
}

impl From<corral_registry::RegistryError> for TwinFailure {
    fn from(e: corral_registry::RegistryError) -> Self {
        TwinFailure::Api(e.into())
    }
}

impl From<TwinError> for TwinFailure {
    fn from(e: TwinError) -> Self {
        match e {
            TwinError::Conflict { .. } => TwinFailure::StaleVersion(e.to_string()),
            other => TwinFailure::Api(ApiError(other.to_wire())),
        }
    }
}

impl IntoResponse for TwinFailure {
    fn into_response(self) -> Response {
        match self {
            TwinFailure::Api(e) => e.into_response(),
            TwinFailure::StaleVersion(message) => {
                (StatusCode::PRECONDITION_FAILED, Json(json!({ "error": message }))).into_response()
            }
        }
    }
}

type TwinResult<T> = Result<T, TwinFailure>;

/// Who is asking for a twin: an application (API token, console session) or a device.
enum Reader {
    Application(Principal),
    Device(DeviceCaller),
}

/// Device tokens carry their own prefix, so one route can serve both kinds of caller without
/// trying a secret against both tables. A connection's client certificate counts only when
/// nothing else was sent, as on ingest.
async fn reader(state: &AppState, headers: &HeaderMap, certificate: Option<&ClientCertificate>) -> ApiResult<Reader> {
    let device_token = headers.contains_key(header::AUTHORIZATION)
        && crate::auth::bearer(headers).is_ok_and(|token| token.starts_with(DEVICE_TOKEN_PREFIX));
    let certificate_only = certificate.is_some()
        && !headers.contains_key(header::AUTHORIZATION)
        && crate::auth::cookie(headers, crate::SESSION_COOKIE).is_none();
    if device_token || certificate_only {
        return Ok(Reader::Device(crate::auth::device(state, headers, certificate).await?));
    }
    // GET is a safe method: the console session needs no CSRF token to read.
    Ok(Reader::Application(crate::auth::authenticate(state, headers).await?.0))
}

/// `?since=N` of `GET .../twin`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct Since {
    /// The desired version the device last applied: answer only what changed since.
    since: Option<u64>,
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(Since { since }): Query<Since>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
) -> TwinResult<Response> {
    let twin = match reader(&state, &headers, certificate.as_deref()).await? {
        Reader::Application(caller) => ensure(&state, &state.registry.get_device(&caller, &id).await?).await?,
        Reader::Device(device) => device_twin(&state, &own(&device, &id)?).await?,
    };
    match since {
        // The twin was read in the caller's scope just above, so the device is one it may see.
        // (No ETag: the changes may reach past the version read above.)
        Some(since) => Ok(Json(TwinAnswer::Changes(state.twins.changes_since(&twin.device, since).await?)).into_response()),
        None => Ok(with_etag(twin.desired.version, Json(TwinAnswer::Twin(twin)))),
    }
}

pub async fn patch_desired(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> TwinResult<Response> {
    if !caller.can_write() {
        return Err(ApiError::forbidden(format!("role {} may not change a twin's desired document", caller.role)).into());
    }
    let expected_version = if_match(&headers)?;
    let patch = parse_patch(body)?;
    let device = state.registry.get_device(&caller, &id).await?;
    let before = ensure(&state, &device).await?.desired.version;
    let scope = caller.tenant.as_ref().map(|t| t.as_str());
    let desired = state.twins.patch_desired(&device.id, scope, expected_version, &patch).await?;
    // A patch that changed nothing made no new version: nothing to audit.
    if desired.version != before {
        let detail = json!({ "version": desired.version });
        if let Err(e) =
            state.registry.record_audit(&caller, "twin.desired", device.id.as_str(), Some(&device.tenant), detail).await
        {
            tracing::error!(device = %device.id, error = %e, "audit entry not written");
        }
    }
    let version = desired.version;
    Ok(with_etag(version, Json(DesiredPatched { device: device.id, version, desired })))
}

pub async fn patch_reported(
    State(state): State<AppState>,
    Path(id): Path<String>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> TwinResult<Json<ReportedPatched>> {
    // Authenticate before parsing: a stranger learns nothing from our parser.
    let caller = crate::auth::device(&state, &headers, certificate.as_deref()).await?;
    let device = own(&caller, &id)?;
    let patch = parse_patch(body)?;
    device_twin(&state, &device).await?;
    let reported = state.twins.patch_reported(&device.id, &patch).await?;
    Ok(Json(ReportedPatched { device: device.id, version: reported.version, reported }))
}

/// A device may touch only its own twin.
fn own(device: &DeviceCaller, id: &str) -> ApiResult<DeviceCaller> {
    if device.id.as_str() != id {
        return Err(ApiError::forbidden(format!("device {} may not use the twin of device {id:?}", device.id)));
    }
    Ok(device.clone())
}

/// Creates the twin, or brings its tenant and profile up to date with the registry's device.
async fn ensure(state: &AppState, device: &Device) -> Result<Twin, TwinError> {
    state.twins.ensure_twin(&device.id, &device.tenant, device.profile.as_deref()).await
}

/// A device's own twin, created on its first use. Only then is the registry asked for the profile
/// (as the platform: the device already proved who it is), so a device polling its twin costs
/// one read, not a write per request.
async fn device_twin(state: &AppState, device: &DeviceCaller) -> TwinResult<Twin> {
    match state.twins.twin(&device.id, Some(device.tenant.as_str())).await {
        Err(TwinError::NotFound(_)) => {
            let record = state.registry.get_device(&Principal::system(), device.id.as_str()).await?;
            Ok(ensure(state, &record).await?)
        }
        other => Ok(other?),
    }
}

/// A merge patch body: a JSON object. Size and depth limits are the store's (413 / 400), so every
/// door is held to the same ones; a body over the HTTP limit is a 413 before we see it.
pub(crate) fn parse_patch(body: Result<Bytes, BytesRejection>) -> ApiResult<Document> {
    let body = body?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(patch)) => Ok(patch),
        Ok(_) => Err(ApiError::bad_input("a twin patch must be a JSON object, like {\"interval_s\": 30}")),
        Err(e) => Err(ApiError::bad_input(format!("the patch is not valid JSON: {e}"))),
    }
}

/// `If-Match: 3`, `"3"` or `W/"3"` → `Some(3)`; absent or `*` → no precondition.
fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().map_err(|_| ApiError::bad_input("If-Match is not valid text"))?.trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_input(format!("If-Match must be the desired version, like \"If-Match: 3\", not {text:?}")))
}

/// The desired version as a strong entity tag, what a client sends back in `If-Match`.
fn with_etag(version: u64, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::status_of;

    #[test]
    fn if_match_takes_bare_quoted_and_weak_versions() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(if_match(&with("*")).unwrap(), None);
        assert_eq!(if_match(&with("3")).unwrap(), Some(3));
        assert_eq!(if_match(&with("\"4\"")).unwrap(), Some(4));
        assert_eq!(if_match(&with("W/\"5\"")).unwrap(), Some(5));
        assert_eq!(if_match(&with("abc")).unwrap_err().0.kind, corral_model::ErrorKind::BadInput);
    }

    #[test]
    fn a_stale_version_is_412_and_other_twin_errors_keep_their_status() {
        let stale = TwinFailure::from(TwinError::Conflict { expected: 1, current: 2 }).into_response();
        assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
        let big = TwinFailure::from(TwinError::TooLarge("big".into())).into_response();
        assert_eq!(big.status(), status_of(corral_model::ErrorKind::TooLarge));
    }

    #[test]
    fn a_patch_must_be_a_json_object() {
        assert!(parse_patch(Ok(Bytes::from_static(b"{\"a\": null}"))).is_ok());
        for bad in [&b"{"[..], b"[1]", b"3", b""] {
            assert!(parse_patch(Ok(Bytes::copy_from_slice(bad))).is_err(), "{bad:?}");
        }
    }
}
