//! Certificate authorities and device certificates: `POST/GET /api/v1/cas`,
//! `POST /api/v1/devices/{id}/certificate`, `GET /api/v1/devices/{id}/certificates`,
//! `DELETE /api/v1/devices/{id}/certificate/{serial or fingerprint}`, and the approval of devices
//! registered just in time: `POST /api/v1/devices/{id}/approve|reject`.

use crate::AppState;
use crate::auth::Caller;
use crate::body::{parse_json, parse_json_or_default};
use crate::error::ApiResult;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use crate::extract::Path;
use axum::http::StatusCode;
use corral_model::TenantId;
use corral_registry::{AutoRegister, CertificateAuthority, Device, DeviceCertificate, DeviceStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use crate::openapi::{Api, Operation};

const TAG: &str = "certificates";

pub(crate) fn routes(api: Api) -> Api {
    api
        .post("/api/v1/devices/{id}/certificate", issue, Operation::new(TAG, "TODO"))
        .delete("/api/v1/devices/{id}/certificate/{which}", revoke, Operation::new(TAG, "TODO"))
        .get("/api/v1/devices/{id}/certificates", list, Operation::new(TAG, "TODO"))
        .post("/api/v1/devices/{id}/approve", approve, Operation::new(TAG, "TODO"))
        .post("/api/v1/devices/{id}/reject", reject, Operation::new(TAG, "TODO"))
        .post("/api/v1/cas", create_ca, Operation::new(TAG, "TODO"))
        .get("/api/v1/cas", list_cas, Operation::new(TAG, "TODO"))
        .get("/api/v1/cas/{id}", show_ca, Operation::new(TAG, "TODO"))
}

/// Body of `POST /api/v1/cas`: with `certificate` (PEM) it registers the operator's own CA,
/// without it Corral creates one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCa {
    name: String,
    #[serde(default)]
    tenant: Option<TenantId>,
    #[serde(default)]
    certificate: Option<String>,
    #[serde(default = "ten_years")]
    valid_days: u32,
    /// Just-in-time registration: `{"profile": "meter", "status": "active" | "pending-approval"}`.
    #[serde(default)]
    auto_register: Option<AutoRegisterBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRegisterBody {
    #[serde(default)]
    profile: Option<String>,
    #[serde(default = "active")]
    status: DeviceStatus,
}

fn active() -> DeviceStatus {
    DeviceStatus::Active
}

fn ten_years() -> u32 {
    3650
}

fn one_year() -> u32 {
    365
}

pub async fn create_ca(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<CertificateAuthority>)> {
    // Read as JSON whatever the Content-Type says: `curl -d` sends a form type.
    let new: NewCa = parse_json(body)?;
    let auto = new.auto_register.map(|a| AutoRegister { profile: a.profile, status: a.status });
    let ca = match &new.certificate {
        Some(pem) => state.authorities.import(&caller, &new.name, new.tenant, pem, auto).await?,
        None => state.authorities.create(&caller, &new.name, new.tenant, new.valid_days.clamp(1, 36_500), auto).await?,
    };
    Ok((StatusCode::CREATED, Json(ca)))
}

pub async fn list_cas(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "cas": state.registry.certificate_authorities(&caller).await? })))
}

pub async fn show_ca(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CertificateAuthority>> {
    Ok(Json(state.registry.certificate_authority(&caller, &id).await?))
}

/// Body of `POST /api/v1/devices/{id}/certificate`: a CSR (PEM) to sign, or nothing to have a
/// key made (returned once).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    #[serde(default)]
    csr: Option<String>,
    #[serde(default)]
    ca: Option<String>,
    #[serde(default = "one_year")]
    valid_days: u32,
}

pub async fn issue(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // No body at all asks for a key made here, like `{}`.
    let request: CertificateRequest = parse_json_or_default(body)?;
    let days = request.valid_days.clamp(1, 36_500);
    let issued = state.authorities.issue(&caller, &id, request.ca.as_deref(), request.csr.as_deref(), days).await?;
    let mut body = json!({ "certificate": issued.certificate, "record": issued.record });
    if let Some(key) = issued.private_key {
        body["private_key"] = key.into();
    }
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "certificates": state.registry.device_certificates(&caller, &id).await? })))
}

pub async fn revoke(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, which)): Path<(String, String)>,
) -> ApiResult<Json<DeviceCertificate>> {
    Ok(Json(state.authorities.revoke(&caller, &id, &which).await?))
}

/// `POST /api/v1/devices/{id}/approve`: a device waiting after just-in-time registration
/// becomes active.
pub async fn approve(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Json<Device>> {
    Ok(Json(state.registry.approve_device(&caller, &id).await?))
}

/// `POST /api/v1/devices/{id}/reject`: it is decommissioned instead.
pub async fn reject(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Json<Device>> {
    Ok(Json(state.registry.reject_device(&caller, &id).await?))
}
