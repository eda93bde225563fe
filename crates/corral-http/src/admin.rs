//! Administration routes: API tokens, profiles (device kinds), tenants, audit log.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use crate::extract::{Path, Query};
use axum::http::StatusCode;
use corral_model::TenantId;
use corral_registry::{NewApiToken, Profile};
use serde::Deserialize;
use serde_json::{Value, json};
use crate::openapi::{Api, Operation};

const TAG: &str = "admin";

pub(crate) fn routes(api: Api) -> Api {
    api
        .post("/api/v1/tokens", create_token, Operation::new(TAG, "TODO"))
        .get("/api/v1/tokens", list_tokens, Operation::new(TAG, "TODO"))
        .delete("/api/v1/tokens/{id}", revoke_token, Operation::new(TAG, "TODO"))
        .get("/api/v1/profiles", list_profiles, Operation::new(TAG, "TODO"))
        .get("/api/v1/profiles/{name}", show_profile, Operation::new(TAG, "TODO"))
        .put("/api/v1/profiles/{name}", put_profile, Operation::new(TAG, "TODO"))
        .get("/api/v1/tenants", list_tenants, Operation::new(TAG, "TODO"))
        .post("/api/v1/tenants", create_tenant, Operation::new(TAG, "TODO"))
        .get("/api/v1/audit", audit, Operation::new(TAG, "TODO"))
}

pub async fn create_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new: NewApiToken = parse_json(body)?;
    let (token, secret) = state.registry.create_api_token(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(json!({ "token": secret, "info": token }))))
}

pub async fn list_tokens(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "tokens": state.registry.list_api_tokens(&caller).await? })))
}

pub async fn revoke_token(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    state.registry.revoke_api_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_profiles(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "profiles": state.registry.list_profiles(&caller).await? })))
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

pub async fn list_tenants(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "tenants": state.registry.list_tenants(&caller).await? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    id: TenantId,
    name: Option<String>,
}

pub async fn create_tenant(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new: NewTenant = parse_json(body)?;
    let tenant = state.registry.create_tenant(&caller, new.id, new.name).await?;
    Ok((StatusCode::CREATED, Json(json!(tenant))))
}

#[derive(Deserialize)]
pub struct AuditParams {
    limit: Option<u32>,
}

pub async fn audit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<AuditParams>,
) -> ApiResult<Json<Value>> {
    let entries = state.registry.audit_log(&caller, params.limit.unwrap_or(100).min(1000)).await?;
    Ok(Json(json!({ "entries": entries })))
}
