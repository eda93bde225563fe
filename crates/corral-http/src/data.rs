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
use crate::extract::{Path, Query};
use crate::openapi::{Api, Operation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use corral_model::TenantId;
use corral_registry::Principal;
use corral_services::{Deletion, RetentionPolicy, RollupSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const TAG: &str = "data";

pub(crate) fn routes(api: Api) -> Api {
    api.get(
        "/api/v1/retention",
        list_retention,
        Operation::new(TAG, "Lists retention policies")
            .describe("The configuration's first, then those set through the API; a scoped token sees the tables' own and its tenant's.")
            .returns::<RetentionPolicies>(200, "The policies"),
    )
    .post(
        "/api/v1/retention/enforce",
        enforce_retention,
        Operation::new(TAG, "Applies every retention policy now")
            .describe("Rather than at the next scheduled run. Unscoped admins only; audited as `retention.enforce`.")
            .returns::<Deletions>(200, "What was deleted, per table"),
    )
    .put(
        "/api/v1/retention/{table}",
        set_retention,
        Operation::new(TAG, "Sets how long a table keeps rows")
            .describe(
                "Adds or replaces the policy for the table and tenant. Without `tenant`, the table's own policy \
                (unscoped admins only); a tenant's policy overrides it for that tenant's devices, and a scoped admin \
                sets only its own tenant's. A policy the configuration declares is changed only there (409). \
                Audited as `retention.set`.",
            )
            .path::<String>("table", "The table")
            .body::<PolicyBody>()
            .returns::<PolicySet>(200, "The policy as set")
            .errors(&[409]),
    )
    .delete(
        "/api/v1/retention/{table}",
        remove_retention,
        Operation::new(TAG, "Removes a retention policy set through the API")
            .describe(
                "The table's own (unscoped admins only) or, with `tenant`, that tenant's; a scoped admin removes only \
                its own tenant's. 404 when the API set no such policy. Audited as `retention.remove`.",
            )
            .path::<String>("table", "The table")
            .query::<TenantParam>()
            .returns_nothing(204, "Removed; the table's rows are kept as the remaining policies say"),
    )
    .get(
        "/api/v1/rollups",
        list_rollups,
        Operation::new(TAG, "Lists rollups").returns::<Rollups>(200, "Every rollup"),
    )
    .post(
        "/api/v1/rollups",
        create_rollup,
        Operation::new(TAG, "Creates a rollup")
            .describe(
                "A table kept up to date beside `source`: per device, tag set and `every` bucket, one row with a \
                column per field and aggregate (`speed_avg`). It fills from the stored rows in the background. 409 \
                when a table of that name exists. Unscoped admins only; audited as `rollup.create`.",
            )
            .body::<RollupSpec>()
            .returns::<RollupCreated>(201, "Created; filling from stored rows")
            .errors(&[409]),
    )
    .delete(
        "/api/v1/rollups/{name}",
        remove_rollup,
        Operation::new(TAG, "Stops maintaining a rollup")
            .describe("Its table keeps the rows it has (a retention policy removes them). Unscoped admins only; audited as `rollup.remove`.")
            .path::<String>("name", "The rollup (its table)")
            .returns_nothing(204, "No longer maintained"),
    )
    .delete(
        "/api/v1/devices/{id}/data",
        delete_device_data,
        Operation::new(TAG, "Deletes every row a device wrote, in every table")
            .describe(
                "Rollups and its latest rows too. The device stays registered (decommission it separately). A \
                scoped admin deletes only its own tenant's devices' rows; an unscoped admin also those of an id the \
                registry no longer knows. Admins only; audited as `device.delete_data`.",
            )
            .path::<String>("id", "The device")
            .returns::<DeviceDataDeleted>(200, "What was deleted"),
    )
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct RetentionPolicies {
    policies: Vec<RetentionPolicy>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct PolicySet {
    policy: RetentionPolicy,
}

/// What a deletion removed, per table.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Deletions {
    deletions: Vec<Deletion>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Rollups {
    rollups: Vec<RollupSpec>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct RollupCreated {
    rollup: RollupSpec,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct DeviceDataDeleted {
    /// The device whose rows were deleted.
    device: String,
    /// Rows deleted, in all tables.
    rows_deleted: u64,
    deletions: Vec<Deletion>,
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
pub async fn list_retention(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<RetentionPolicies>> {
    let mut policies = state.lifecycle.retention_policies().await;
    if let Some(own) = &caller.tenant {
        policies.retain(|p| p.tenant.as_deref().is_none_or(|t| t == own.as_str()));
    }
    Ok(Json(RetentionPolicies { policies }))
}

/// Body of `PUT /api/v1/retention/{table}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// How long rows are kept: a whole number and `s`, `m`, `h`, `d` or `w` (`90d`, `36h`, `2w`).
    keep: String,
    /// The tenant whose devices' rows it covers; absent: the table's own policy (a scoped admin's
    /// own tenant is taken instead).
    #[serde(default)]
    tenant: Option<String>,
}

/// `PUT /api/v1/retention/{table}` with `{"keep": "90d", "tenant": "acme"}` (tenant optional).
pub async fn set_retention(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(table): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PolicySet>> {
    let body: PolicyBody = parse_json(body)?;
    let tenant = policy_tenant(&caller, body.tenant)?;
    if tenant.is_none() {
        require_unscoped_admin(&caller, "a table's own retention")?;
    }
    let policy = RetentionPolicy { table, tenant, keep: body.keep, source: Default::default() };
    let policy = state.lifecycle.set_retention(policy).await?;
    audit(&state, &caller, "retention.set", &policy.table, policy.tenant.as_deref(), json!({ "keep": policy.keep })).await;
    Ok(Json(PolicySet { policy }))
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantParam {
    /// The tenant whose policy; absent: the table's own (a scoped admin's own tenant is taken
    /// instead).
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
pub async fn enforce_retention(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Deletions>> {
    require_unscoped_admin(&caller, "enforcing retention")?;
    let deletions = state.lifecycle.enforce_retention().await?;
    audit(&state, &caller, "retention.enforce", "*", None, json!({ "deletions": deletions })).await;
    Ok(Json(Deletions { deletions }))
}

pub async fn list_rollups(State(state): State<AppState>, Caller(_caller): Caller) -> ApiResult<Json<Rollups>> {
    Ok(Json(Rollups { rollups: state.lifecycle.rollups().await }))
}

/// `POST /api/v1/rollups` with a [`RollupSpec`]; it fills from stored rows in the background.
pub async fn create_rollup(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<RollupCreated>)> {
    require_unscoped_admin(&caller, "a rollup")?;
    let spec: RollupSpec = parse_json(body)?;
    let rollup = state.lifecycle.create_rollup(spec).await?;
    audit(&state, &caller, "rollup.create", &rollup.name, None, json!({ "rollup": rollup })).await;
    Ok((StatusCode::CREATED, Json(RollupCreated { rollup })))
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
) -> ApiResult<Json<DeviceDataDeleted>> {
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
    Ok(Json(DeviceDataDeleted { device, rows_deleted: rows, deletions }))
}
