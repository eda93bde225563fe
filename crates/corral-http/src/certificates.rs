//! Certificate authorities and device certificates: `POST/GET /api/v1/cas`,
//! `POST /api/v1/devices/{id}/certificate`, `GET /api/v1/devices/{id}/certificates`,
//! `DELETE /api/v1/devices/{id}/certificate/{serial or fingerprint}`, and the approval of devices
//! registered just in time: `POST /api/v1/devices/{id}/approve|reject`.

use crate::AppState;
use crate::auth::Caller;
use crate::body::{parse_json, parse_json_or_default};
use crate::error::ApiResult;
use crate::extract::Path;
use crate::openapi::{Api, Operation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use corral_model::TenantId;
use corral_pki::IssuedCertificate;
use corral_registry::{AutoRegister, CertificateAuthority, Device, DeviceCertificate, DeviceStatus};
use serde::{Deserialize, Serialize};

const TAG: &str = "certificates";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/devices/{id}/certificate",
        issue,
        Operation::new(TAG, "Issues a client certificate to a device")
            .describe(
                "Signed by a CA of Corral's of the device's tenant: `ca`, or the tenant's only one (none or \
                 several without `ca` is a 400, as is an operator's own CA, which Corral cannot sign with). \
                 With `csr` (PEM) the certificate is for the CSR's key; without it (or with an empty body) \
                 Corral makes a key and returns it this once only. A decommissioned device gets none (409).",
            )
            .path::<String>("id", "The device")
            .body::<CertificateRequest>()
            .body_optional()
            .returns::<IssuedCertificate>(201, "Issued")
            .errors(&[409]),
    )
    .delete(
        "/api/v1/devices/{id}/certificate/{which}",
        revoke,
        Operation::new(TAG, "Revokes a device's certificate")
            .describe(
                "Connections presenting it are refused from now on, and the device's live connections are \
                 closed. A certificate already revoked is not found (404).",
            )
            .path::<String>("id", "The device")
            .path::<String>("which", "The certificate's serial or fingerprint (hex, any case)")
            .returns::<DeviceCertificate>(200, "The certificate, revoked"),
    )
    .get(
        "/api/v1/devices/{id}/certificates",
        list,
        Operation::new(TAG, "Lists a device's certificates, newest first")
            .describe("Revoked ones included; issued here or first seen on a TLS connection.")
            .path::<String>("id", "The device")
            .returns::<DeviceCertificateList>(200, "The device's certificates"),
    )
    .post(
        "/api/v1/devices/{id}/approve",
        approve,
        Operation::new(TAG, "Approves a device waiting after just-in-time registration")
            .describe("It becomes active. A device that is not `pending-approval` is a conflict (409).")
            .path::<String>("id", "The device")
            .returns::<Device>(200, "The device, active")
            .errors(&[409]),
    )
    .post(
        "/api/v1/devices/{id}/reject",
        reject,
        Operation::new(TAG, "Rejects a device waiting after just-in-time registration")
            .describe("It is decommissioned. A device that is not `pending-approval` is a conflict (409).")
            .path::<String>("id", "The device")
            .returns::<Device>(200, "The device, decommissioned")
            .errors(&[409]),
    )
    .post(
        "/api/v1/cas",
        create_ca,
        Operation::new(TAG, "Creates or registers a certificate authority for device certificates")
            .describe(
                "Admins only; a tenant-scoped admin for its own tenant. With `certificate` (PEM, a CA \
                 certificate) it registers the operator's own CA, which Corral verifies against but never \
                 signs with; without it Corral creates a CA and keeps its key. The body is read as JSON \
                 whatever its Content-Type. A CA certificate registered already is a conflict (409).",
            )
            .body::<NewCa>()
            .returns::<CertificateAuthority>(201, "Created or registered")
            .errors(&[409]),
    )
    .get(
        "/api/v1/cas",
        list_cas,
        Operation::new(TAG, "Lists certificate authorities")
            .describe("Those of every tenant for an unscoped caller, of its own tenant for a scoped one; oldest first.")
            .returns::<CaList>(200, "The CAs"),
    )
    .get(
        "/api/v1/cas/{id}",
        show_ca,
        Operation::new(TAG, "One certificate authority")
            .path::<String>("id", "The CA's id (`ca-` and 12 hex digits)")
            .returns::<CertificateAuthority>(200, "The CA"),
    )
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct DeviceCertificateList {
    certificates: Vec<DeviceCertificate>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct CaList {
    cas: Vec<CertificateAuthority>,
}

/// Body of `POST /api/v1/cas`: with `certificate` (PEM) it registers the operator's own CA,
/// without it Corral creates one.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCa {
    /// A name for people (at most 200 characters).
    name: String,
    /// The tenant whose devices' certificates it vouches for; left out, the caller's scope or
    /// `default`.
    #[serde(default)]
    tenant: Option<TenantId>,
    /// The operator's own CA certificate (PEM); left out, Corral creates a CA.
    #[serde(default)]
    certificate: Option<String>,
    /// Days a created CA is valid (1-36500; others are brought into that range). Ignored with
    /// `certificate`.
    #[serde(default = "ten_years")]
    valid_days: u32,
    /// Just-in-time registration: the first connection of an unknown device with a certificate
    /// of this CA creates the device.
    #[serde(default)]
    auto_register: Option<AutoRegisterBody>,
}

/// How a CA registers the unknown devices its certificates name.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoRegisterBody {
    /// The profile such devices get (created empty if nobody declared it yet).
    #[serde(default)]
    profile: Option<String>,
    /// `active`, or `pending-approval` for an operator to approve first (any other status is a
    /// 400).
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

pub async fn list_cas(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<CaList>> {
    Ok(Json(CaList { cas: state.registry.certificate_authorities(&caller).await? }))
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
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// A certificate signing request (PEM) for the device's own key; left out, Corral makes a key.
    #[serde(default)]
    csr: Option<String>,
    /// The CA to sign with (its id); left out, the only CA of Corral's in the device's tenant.
    #[serde(default)]
    ca: Option<String>,
    /// Days the certificate is valid (1-36500; others are brought into that range).
    #[serde(default = "one_year")]
    valid_days: u32,
}

pub async fn issue(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<IssuedCertificate>)> {
    // No body at all asks for a key made here, like `{}`.
    let request: CertificateRequest = parse_json_or_default(body)?;
    let days = request.valid_days.clamp(1, 36_500);
    let issued = state.authorities.issue(&caller, &id, request.ca.as_deref(), request.csr.as_deref(), days).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceCertificateList>> {
    Ok(Json(DeviceCertificateList { certificates: state.registry.device_certificates(&caller, &id).await? }))
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
