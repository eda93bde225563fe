//! `/api/v1/rules`, `/api/v1/alarms` and `/api/v1/outbox`. Every role reads; operators and admins
//! write. Tenant scope is passed to `corral-rules`, which hides other tenants' rules and alarms.
//! Changes are recorded in the registry's audit log.

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
use corral_rules::{AlarmFilter, AlarmStatus, RuleSpec};
use serde::Deserialize;
use serde_json::{Value, json};
use crate::openapi::{Api, Operation};

const TAG: &str = "rules";

pub(crate) fn routes(api: Api) -> Api {
    api
        .post("/api/v1/rules", create, Operation::new(TAG, "TODO"))
        .get("/api/v1/rules", list, Operation::new(TAG, "TODO"))
        .get("/api/v1/rules/{id}", show, Operation::new(TAG, "TODO"))
        .put("/api/v1/rules/{id}", replace, Operation::new(TAG, "TODO"))
        .delete("/api/v1/rules/{id}", delete, Operation::new(TAG, "TODO"))
        .get("/api/v1/alarms", alarms, Operation::new(TAG, "TODO"))
        .get("/api/v1/alarms/{id}", alarm, Operation::new(TAG, "TODO"))
        .post("/api/v1/alarms/{id}/ack", acknowledge, Operation::new(TAG, "TODO"))
        .post("/api/v1/alarms/{id}/clear", clear, Operation::new(TAG, "TODO"))
        .post("/api/v1/alarms/{id}/comments", comment, Operation::new(TAG, "TODO"))
        .get("/api/v1/outbox", outbox, Operation::new(TAG, "TODO"))
        .post("/api/v1/outbox/{id}/retry", retry, Operation::new(TAG, "TODO"))
}

fn scope(caller: &Principal) -> Option<&str> {
    caller.tenant.as_ref().map(TenantId::as_str)
}

fn require_write(caller: &Principal) -> ApiResult<()> {
    if caller.can_write() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("role {} may only read rules and alarms", caller.role)))
    }
}

async fn audit(state: &AppState, caller: &Principal, action: &str, target: String, tenant: Option<&str>, detail: Value) {
    let tenant = tenant.and_then(|t| TenantId::new(t).ok());
    if let Err(e) = state.registry.record_audit(caller, action, &target, tenant.as_ref(), detail).await {
        tracing::error!(action, target, error = %e, "audit entry not written");
    }
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_write(&caller)?;
    let spec: RuleSpec = parse_json(body)?;
    let rule = state.rules.create_rule(spec, &caller.name, scope(&caller)).await?;
    audit(&state, &caller, "rule.create", rule.id.to_string(), rule.spec.tenant.as_deref(), json!({"name": rule.spec.name}))
        .await;
    Ok((StatusCode::CREATED, Json(json!({ "rule": rule }))))
}

pub async fn list(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "rules": state.rules.rules(scope(&caller)).await? })))
}

pub async fn show(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "rule": state.rules.rule(id, scope(&caller)).await? })))
}

pub async fn replace(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    require_write(&caller)?;
    let spec: RuleSpec = parse_json(body)?;
    let rule = state.rules.replace_rule(id, spec, &caller.name, scope(&caller)).await?;
    audit(&state, &caller, "rule.replace", id.to_string(), rule.spec.tenant.as_deref(), json!({"name": rule.spec.name})).await;
    Ok(Json(json!({ "rule": rule })))
}

pub async fn delete(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    require_write(&caller)?;
    let rule = state.rules.rule(id, scope(&caller)).await?;
    state.rules.delete_rule(id, &caller.name, scope(&caller)).await?;
    audit(&state, &caller, "rule.delete", id.to_string(), rule.spec.tenant.as_deref(), json!({"name": rule.spec.name})).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmParams {
    status: Option<String>,
    device: Option<String>,
    rule: Option<i64>,
    severity: Option<String>,
    /// `true`: only alarms not cleared.
    open: Option<bool>,
    limit: Option<usize>,
    before: Option<i64>,
}

pub async fn alarms(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(p): Query<AlarmParams>,
) -> ApiResult<Json<Value>> {
    let status = p
        .status
        .as_deref()
        .map(|s| {
            AlarmStatus::parse(s).ok_or_else(|| ApiError::bad_input(format!("status `{s}`: use active, acknowledged or cleared")))
        })
        .transpose()?;
    let limit = p.limit.unwrap_or(100).clamp(1, 1_000);
    let filter = AlarmFilter {
        tenant: scope(&caller).map(str::to_string),
        device: p.device,
        rule_id: p.rule,
        status,
        open: p.open.unwrap_or(false),
        severity: p.severity,
        limit,
        before: p.before,
    };
    let alarms = state.rules.alarms(&filter).await?;
    // A full page may have more behind it: `before=<next_before>` continues.
    let next_before = (alarms.len() == limit).then(|| alarms.last().map(|a| a.id)).flatten();
    Ok(Json(json!({ "alarms": alarms, "next_before": next_before })))
}

pub async fn alarm(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let (alarm, comments) = state.rules.alarm(id, scope(&caller)).await?;
    Ok(Json(json!({ "alarm": alarm, "comments": comments })))
}

pub async fn acknowledge(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    require_write(&caller)?;
    let alarm = state.rules.acknowledge(id, &caller.name, scope(&caller)).await?;
    audit(&state, &caller, "alarm.acknowledge", id.to_string(), Some(&alarm.tenant), json!({"device": alarm.device})).await;
    Ok(Json(json!({ "alarm": alarm })))
}

pub async fn clear(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    require_write(&caller)?;
    let alarm = state.rules.clear(id, &caller.name, scope(&caller)).await?;
    audit(&state, &caller, "alarm.clear", id.to_string(), Some(&alarm.tenant), json!({"device": alarm.device})).await;
    Ok(Json(json!({ "alarm": alarm })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    text: String,
}

pub async fn comment(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_write(&caller)?;
    let new: NewComment = parse_json(body)?;
    let comment = state.rules.comment(id, &caller.name, &new.text, scope(&caller)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "comment": comment }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxParams {
    state: Option<String>,
    limit: Option<usize>,
    before: Option<i64>,
}

pub async fn outbox(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(p): Query<OutboxParams>,
) -> ApiResult<Json<Value>> {
    if let Some(s) = p.state.as_deref()
        && !matches!(s, "pending" | "delivered" | "dead")
    {
        return Err(ApiError::bad_input(format!("state `{s}`: use pending, delivered or dead")));
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1_000);
    let entries = state.rules.outbox(p.state.as_deref(), scope(&caller), limit, p.before).await?;
    let next_before = (entries.len() == limit).then(|| entries.last().map(|e| e.id)).flatten();
    Ok(Json(json!({ "entries": entries, "next_before": next_before })))
}

pub async fn retry(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    require_write(&caller)?;
    let entry = state.rules.retry_delivery(id, scope(&caller)).await?;
    audit(&state, &caller, "outbox.retry", id.to_string(), scope(&caller), json!({"key": entry.idempotency_key})).await;
    Ok(Json(json!({ "entry": entry })))
}
