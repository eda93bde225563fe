//! Administration routes: API tokens, profiles (device kinds), tenants, audit log.

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
use axum::http::StatusCode;
use corral_model::TenantId;
use corral_registry::{ApiToken, AuditEntry, NewApiToken, Profile, Tenant};
use serde::{Deserialize, Serialize};

const TAG: &str = "admin";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/tokens",
        create_token,
        Operation::new(TAG, "Creates an API token")
            .describe(
                "Admins only. A tenant-scoped admin creates tokens of its own tenant only (no `tenant`: \
                 its own); an unscoped admin's token without `tenant` is unscoped. A tenant that does not \
                 exist yet is created. The secret is in the answer this once only.",
            )
            .body::<NewApiToken>()
            .returns::<ApiTokenCreated>(201, "Created, with its secret"),
    )
    .get(
        "/api/v1/tokens",
        list_tokens,
        Operation::new(TAG, "Lists API tokens")
            .describe(
                "Admins only: every token (a tenant-scoped admin: its tenant's), revoked ones included; never their secrets.",
            )
            .returns::<ApiTokenList>(200, "The tokens, by id"),
    )
    .delete(
        "/api/v1/tokens/{id}",
        revoke_token,
        Operation::new(TAG, "Revokes an API token")
            .describe(
                "Admins only. It stops working at once; revoking a revoked token changes nothing. The last \
                 active unscoped admin token cannot be revoked (409): create another one first.",
            )
            .path::<i64>("id", "The token's id")
            .returns_nothing(204, "Revoked")
            .errors(&[409]),
    )
    .get(
        "/api/v1/profiles",
        list_profiles,
        Operation::new(TAG, "Lists profiles (kinds of device)").returns::<ProfileList>(200, "Every profile, by name"),
    )
    .get(
        "/api/v1/profiles/{name}",
        show_profile,
        Operation::new(TAG, "One profile").path::<String>("name", "The profile's name").returns::<Profile>(200, "The profile"),
    )
    .put(
        "/api/v1/profiles/{name}",
        put_profile,
        Operation::new(TAG, "Creates or replaces a profile")
            .describe(
                "Operators and admins without a tenant scope (profiles are shared by every tenant). The \
                 body's `name` must be the path's. Declared attributes become typed columns of the SQL \
                 `devices` table.",
            )
            .path::<String>("name", "The profile's name; the same as the body's")
            .body::<Profile>()
            .returns::<Profile>(200, "The profile as stored"),
    )
    .get(
        "/api/v1/tenants",
        list_tenants,
        Operation::new(TAG, "Lists tenants")
            .describe("All of them for an unscoped caller; a tenant-scoped one sees only its own.")
            .returns::<TenantList>(200, "The tenants, by id"),
    )
    .post(
        "/api/v1/tenants",
        create_tenant,
        Operation::new(TAG, "Creates a tenant")
            .describe(
                "Unscoped admins only. An id that exists already, including one created implicitly by a \
                 device or token naming it, is a conflict (409).",
            )
            .body::<NewTenant>()
            .returns::<Tenant>(201, "Created")
            .errors(&[409]),
    )
    .get(
        "/api/v1/audit",
        audit,
        Operation::new(TAG, "The audit log, newest first")
            .describe("Admins only; a tenant-scoped admin sees only the entries about its tenant.")
            .query::<AuditParams>()
            .returns::<AuditLog>(200, "The newest entries"),
    )
}

/// An API token just created, with its secret.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ApiTokenCreated {
    /// The secret to send as `Authorization: Bearer <token>`: shown only this once.
    token: String,
    info: ApiToken,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ApiTokenList {
    tokens: Vec<ApiToken>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ProfileList {
    profiles: Vec<Profile>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct TenantList {
    tenants: Vec<Tenant>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct AuditLog {
    entries: Vec<AuditEntry>,
}

pub async fn create_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<ApiTokenCreated>)> {
    let new: NewApiToken = parse_json(body)?;
    let (token, secret) = state.registry.create_api_token(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(ApiTokenCreated { token: secret, info: token })))
}

pub async fn list_tokens(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<ApiTokenList>> {
    Ok(Json(ApiTokenList { tokens: state.registry.list_api_tokens(&caller).await? }))
}

pub async fn revoke_token(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    state.registry.revoke_api_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_profiles(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<ProfileList>> {
    Ok(Json(ProfileList { profiles: state.registry.list_profiles(&caller).await? }))
}

pub async fn show_profile(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Profile>> {
    Ok(Json(state.registry.get_profile(&caller, &name).await?))
}

pub async fn put_profile(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Profile>> {
    let profile: Profile = parse_json(body)?;
    if profile.name != name {
        return Err(ApiError::bad_input(format!(
            "profile name in the body ({:?}) differs from the path ({name:?})",
            profile.name
        )));
    }
    Ok(Json(state.registry.put_profile(&caller, profile).await?))
}

pub async fn list_tenants(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<TenantList>> {
    Ok(Json(TenantList { tenants: state.registry.list_tenants(&caller).await? }))
}

/// Body of `POST /api/v1/tenants`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// The tenant's id, for good: devices, tokens and users name it.
    id: TenantId,
    /// A display name (at most 128 characters).
    name: Option<String>,
}

pub async fn create_tenant(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    let new: NewTenant = parse_json(body)?;
    let tenant = state.registry.create_tenant(&caller, new.id, new.name).await?;
    Ok((StatusCode::CREATED, Json(tenant)))
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct AuditParams {
    /// How many entries: default 100 (also for 0), at most 1000 (more is taken as 1000).
    limit: Option<u32>,
}

pub async fn audit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<AuditParams>,
) -> ApiResult<Json<AuditLog>> {
    let entries = state.registry.audit_log(&caller, params.limit.unwrap_or(100).min(1000)).await?;
    Ok(Json(AuditLog { entries }))
}
