//! The life of stored data, through [`DataLifecycle`](corral_services::DataLifecycle):
//! `/api/v1/retention` (how long each table keeps rows, per tenant too), `/api/v1/rollups`
//! (coarser tables kept up to date) and `DELETE /api/v1/devices/{id}/data` (one device's rows,
//! everywhere). Every role reads; admins change. A tenant-scoped admin sets and removes only its
//! own tenant's policies and deletes only its own devices' data; rollups and table-wide policies
//! are for unscoped admins. Every change is recorded in the audit log with who asked.

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
use corral_registry::Principal;
use corral_services::{RetentionPolicy, RollupSpec};
use serde::Deserialize;
use serde_json::{Value, json};
use crate::openapi::{Api, Operation};

const TAG: &str = "data";

pub(crate) fn routes(api: Api) -> Api {
    api
        .get("/api/v1/retention", list_retention, Operation::new(TAG, "TODO"))
        .post("/api/v1/retention/enforce", enforce_retention, Operation::new(TAG, "TODO"))
        .put("/api/v1/retention/{table}", set_retention, Operation::new(TAG, "TODO"))
        .delete("/api/v1/retention/{table}", remove_retention, Operation::new(TAG, "TODO"))
        .get("/api/v1/rollups", list_rollups, Operation::new(TAG, "TODO"))
        .post("/api/v1/rollups", create_rollup, Operation::new(TAG, "TODO"))
        .delete("/api/v1/rollups/{name}", remove_rollup, Operation::new(TAG, "TODO"))
        .delete("/api/v1/devices/{id}/data", delete_device_data, Operation::new(TAG, "TODO"))
}

fn require_admin(caller: &Principal) -> ApiResult<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("role {} may not change how data is kept; admin only", caller.role)))
    }
}

fn require_unscoped_admin(caller: &Principal, what: &str) -> ApiResult<()> {
    require_admin(caller)?;
    match &caller.tenant {
        Some(tenant) => {
            Err(ApiError::forbidden(format!("{what} covers every tenant; a token scoped to {tenant} may not change it")))
        }
        None => Ok(()),
    }
}

/// The tenant a policy change applies to: a scoped admin's own (and no other).
fn policy_tenant(caller: &Principal, asked: Option<String>) -> ApiResult<Option<String>> {
    require_admin(caller)?;
    match (&caller.tenant, asked) {
        (None, asked) => Ok(asked),
        (Some(own), None) => Ok(Some(own.to_string())),
        (Some(own), Some(asked)) if asked == own.as_str() => Ok(Some(asked)),
        (Some(own), Some(asked)) => Err(ApiError::forbidden(format!("a token scoped to {own} may not set {asked}'s retention"))),
    }
}

async fn audit(state: &AppState, caller: &Principal, action: &str, target: &str, tenant: Option<&str>, detail: Value) {
    let tenant = tenant.and_then(|t| TenantId::new(t).ok());
    if let Err(e) = state.registry.record_audit(caller, action, target, tenant.as_ref(), detail).await {
        tracing::error!(action, target, error = %e, "audit entry not written");
    }
}

/// `GET /api/v1/retention`: every policy a caller's scope covers.
pub async fn list_retention(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Value>> {
    let mut policies = state.lifecycle.retention_policies().await;
    if let Some(own) = &caller.tenant {
        policies.retain(|p| p.tenant.as_deref().is_none_or(|t| t == own.as_str()));
    }
    Ok(Json(json!({ "policies": policies })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    keep: String,
    #[serde(default)]
    tenant: Option<String>,
}

/// `PUT /api/v1/retention/{table}` with `{"keep": "90d", "tenant": "acme"}` (tenant optional).
pub async fn set_retention(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(table): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: PolicyBody = parse_json(body)?;
    let tenant = policy_tenant(&caller, body.tenant)?;
    if tenant.is_none() {
        require_unscoped_admin(&caller, "a table's own retention")?;
    }
    let policy = RetentionPolicy { table, tenant, keep: body.keep, source: Default::default() };
    let policy = state.lifecycle.set_retention(policy).await?;
    audit(&state, &caller, "retention.set", &policy.table, policy.tenant.as_deref(), json!({ "keep": policy.keep })).await;
    Ok(Json(json!({ "policy": policy })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantParam {
    tenant: Option<String>,
}

/// `DELETE /api/v1/retention/{table}?tenant=acme`.
pub async fn remove_retention(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(table): Path<String>,
    Query(params): Query<TenantParam>,
) -> ApiResult<StatusCode> {
    let tenant = policy_tenant(&caller, params.tenant)?;
    if tenant.is_none() {
        require_unscoped_admin(&caller, "a table's own retention")?;
    }
    state.lifecycle.remove_retention(&table, tenant.as_deref()).await?;
    audit(&state, &caller, "retention.remove", &table, tenant.as_deref(), json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/retention/enforce`: apply every policy now; answers what was deleted.
pub async fn enforce_retention(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Value>> {
    require_unscoped_admin(&caller, "enforcing retention")?;
    let deletions = state.lifecycle.enforce_retention().await?;
    audit(&state, &caller, "retention.enforce", "*", None, json!({ "deletions": deletions })).await;
    Ok(Json(json!({ "deletions": deletions })))
}

pub async fn list_rollups(State(state): State<AppState>, Caller(_caller): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "rollups": state.lifecycle.rollups().await })))
}

/// `POST /api/v1/rollups` with a [`RollupSpec`]; it fills from stored rows in the background.
pub async fn create_rollup(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_unscoped_admin(&caller, "a rollup")?;
    let spec: RollupSpec = parse_json(body)?;
    let rollup = state.lifecycle.create_rollup(spec).await?;
    audit(&state, &caller, "rollup.create", &rollup.name, None, json!({ "rollup": rollup })).await;
    Ok((StatusCode::CREATED, Json(json!({ "rollup": rollup }))))
}

pub async fn remove_rollup(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    require_unscoped_admin(&caller, "a rollup")?;
    state.lifecycle.remove_rollup(&name).await?;
    audit(&state, &caller, "rollup.remove", &name, None, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/devices/{id}/data`: every row the device wrote, in every table. The device
/// itself stays registered (decommission it separately).
pub async fn delete_device_data(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    require_admin(&caller)?;
    // Also the tenant check: another tenant's device is not found. An unscoped admin may delete
    // the rows of an id the registry no longer knows (a device removed before its data was).
    let (device, tenant) = match state.registry.get_device(&caller, &id).await {
        Ok(device) => (device.id.to_string(), Some(device.tenant.to_string())),
        Err(corral_registry::RegistryError::NotFound(_)) if caller.tenant.is_none() => (id, None),
        Err(e) => return Err(e.into()),
    };
    let deletions = state.lifecycle.delete_device_data(&device).await?;
    let rows: u64 = deletions.iter().map(|d| d.rows_deleted).sum();
    let detail = json!({ "rows": rows, "deletions": deletions });
    audit(&state, &caller, "device.delete_data", &device, tenant.as_deref(), detail).await;
    Ok(Json(json!({ "device": device, "rows_deleted": rows, "deletions": deletions })))
}
