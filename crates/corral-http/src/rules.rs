//! `/api/v1/rules`, `/api/v1/alarms` and `/api/v1/outbox`. Every role reads; operators and admins
//! write. Tenant scope is passed to `corral-rules`, which hides other tenants' rules and alarms.
//! Changes are recorded in the registry's audit log.

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
use corral_rules::{Alarm, AlarmFilter, AlarmStatus, Comment, OutboxEntry, Rule, RuleSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const TAG: &str = "rules";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/rules",
        create,
        Operation::new(TAG, "Creates a rule")
            .describe(
                "Operators and admins only. The condition, clear condition, durations and actions are checked \
                 now (errors name the field and the position of the mistake). A webhook without a secret gets \
                 a generated one, shown as `********` in every answer. A tenant-scoped token's rule watches \
                 its own tenant only (naming another tenant is a 403).",
            )
            .body::<RuleSpec>()
            .returns::<RuleAnswer>(201, "Created (secrets redacted)"),
    )
    .get(
        "/api/v1/rules",
        list,
        Operation::new(TAG, "Lists the rules the caller's tenant scope covers, in id order")
            .returns::<RuleList>(200, "Every rule (secrets redacted)"),
    )
    .get(
        "/api/v1/rules/{id}",
        show,
        Operation::new(TAG, "One rule").path::<i64>("id", "The rule").returns::<RuleAnswer>(200, "The rule (secrets redacted)"),
    )
    .put(
        "/api/v1/rules/{id}",
        replace,
        Operation::new(TAG, "Replaces a rule's spec")
            .describe(
                "Operators and admins only. Its open alarms stay open. A webhook whose secret is absent or \
                 `********` keeps the secret stored for the same URL.",
            )
            .path::<i64>("id", "The rule")
            .body::<RuleSpec>()
            .returns::<RuleAnswer>(200, "The rule as replaced (secrets redacted)"),
    )
    .delete(
        "/api/v1/rules/{id}",
        delete,
        Operation::new(TAG, "Deletes a rule")
            .describe("Operators and admins only. Its open alarms are cleared (announced, without actions).")
            .path::<i64>("id", "The rule")
            .returns_nothing(204, "Deleted"),
    )
    .get(
        "/api/v1/alarms",
        alarms,
        Operation::new(TAG, "Lists alarms, newest first, one page at a time")
            .query::<AlarmParams>()
            .returns::<AlarmPage>(200, "One page of alarms"),
    )
    .get(
        "/api/v1/alarms/{id}",
        alarm,
        Operation::new(TAG, "One alarm with its comments")
            .path::<i64>("id", "The alarm")
            .returns::<AlarmWithComments>(200, "The alarm and its comments, oldest first"),
    )
    .post(
        "/api/v1/alarms/{id}/ack",
        acknowledge,
        Operation::new(TAG, "Acknowledges an alarm")
            .describe("Operators and admins only. An alarm acknowledged before is answered as it is.")
            .path::<i64>("id", "The alarm")
            .returns::<AlarmAnswer>(200, "The alarm"),
    )
    .post(
        "/api/v1/alarms/{id}/clear",
        clear,
        Operation::new(TAG, "Clears an alarm")
            .describe("Operators and admins only. Its rule's actions for `cleared` run. An alarm cleared already is a 409.")
            .path::<i64>("id", "The alarm")
            .returns::<AlarmAnswer>(200, "The alarm, cleared")
            .errors(&[409]),
    )
    .post(
        "/api/v1/alarms/{id}/comments",
        comment,
        Operation::new(TAG, "Comments on an alarm")
            .describe("Operators and admins only.")
            .path::<i64>("id", "The alarm")
            .body::<NewComment>()
            .returns::<CommentAnswer>(201, "The comment"),
    )
    .get(
        "/api/v1/outbox",
        outbox,
        Operation::new(TAG, "Lists the alarms' action deliveries, newest first, one page at a time")
            .describe("Webhook secrets are shown as `********`.")
            .query::<OutboxParams>()
            .returns::<OutboxPage>(200, "One page of deliveries"),
    )
    .post(
        "/api/v1/outbox/{id}/retry",
        retry,
        Operation::new(TAG, "Delivers an action again")
            .describe(
                "Operators and admins only. A dead (or pending) delivery is put back in line at once with a \
                 fresh attempt budget; a delivered one is a 409.",
            )
            .path::<i64>("id", "The outbox entry")
            .returns::<OutboxEntryAnswer>(200, "The entry, pending again")
            .errors(&[409]),
    )
}

/// One rule.
#[derive(Serialize, schemars::JsonSchema)]
pub struct RuleAnswer {
    rule: Rule,
}

/// Every rule the caller may see.
#[derive(Serialize, schemars::JsonSchema)]
pub struct RuleList {
    rules: Vec<Rule>,
}

/// One page of alarms.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AlarmPage {
    alarms: Vec<Alarm>,
    /// Pass as `before` for the next page; null when this page is not full (the last).
    next_before: Option<i64>,
}

/// An alarm and its comments.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AlarmWithComments {
    alarm: Alarm,
    /// Oldest first.
    comments: Vec<Comment>,
}

/// One alarm.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AlarmAnswer {
    alarm: Alarm,
}

/// One comment.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CommentAnswer {
    comment: Comment,
}

/// One page of outbox entries.
#[derive(Serialize, schemars::JsonSchema)]
pub struct OutboxPage {
    entries: Vec<OutboxEntry>,
    /// Pass as `before` for the next page; null when this page is not full (the last).
    next_before: Option<i64>,
}

/// One outbox entry.
#[derive(Serialize, schemars::JsonSchema)]
pub struct OutboxEntryAnswer {
    entry: OutboxEntry,
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
) -> ApiResult<(StatusCode, Json<RuleAnswer>)> {
    require_write(&caller)?;
    let spec: RuleSpec = parse_json(body)?;
    let rule = state.rules.create_rule(spec, &caller.name, scope(&caller)).await?;
    audit(&state, &caller, "rule.create", rule.id.to_string(), rule.spec.tenant.as_deref(), json!({"name": rule.spec.name}))
        .await;
    Ok((StatusCode::CREATED, Json(RuleAnswer { rule })))
}

pub async fn list(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<RuleList>> {
    Ok(Json(RuleList { rules: state.rules.rules(scope(&caller)).await? }))
}

pub async fn show(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<Json<RuleAnswer>> {
    Ok(Json(RuleAnswer { rule: state.rules.rule(id, scope(&caller)).await? }))
}

pub async fn replace(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<RuleAnswer>> {
    require_write(&caller)?;
    let spec: RuleSpec = parse_json(body)?;
    let rule = state.rules.replace_rule(id, spec, &caller.name, scope(&caller)).await?;
    audit(&state, &caller, "rule.replace", id.to_string(), rule.spec.tenant.as_deref(), json!({"name": rule.spec.name})).await;
    Ok(Json(RuleAnswer { rule }))
}

pub async fn delete(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    require_write(&caller)?;
    let rule = state.rules.rule(id, scope(&caller)).await?;
    state.rules.delete_rule(id, &caller.name, scope(&caller)).await?;
    audit(&state, &caller, "rule.delete", id.to_string(), rule.spec.tenant.as_deref(), json!({"name": rule.spec.name})).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `?status=&device=&rule=&severity=&open=&limit=&before=` of `GET /api/v1/alarms`; every
/// parameter given narrows.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlarmParams {
    /// Only alarms in this state.
    #[schemars(extend("enum" = ["active", "acknowledged", "cleared"]))]
    status: Option<String>,
    /// Only this device's alarms.
    device: Option<String>,
    /// Only this rule's alarms (0: the platform's own alarms).
    rule: Option<i64>,
    /// Only alarms of this severity (`critical`, `major`, `minor`, `warning`, `info`; any other
    /// value matches none).
    severity: Option<String>,
    /// `true`: only alarms not cleared.
    open: Option<bool>,
    /// Alarms per page, 1 to 1000 (default 100; values outside are brought within).
    limit: Option<usize>,
    /// Only alarms with a smaller id: `next_before` of the previous page.
    before: Option<i64>,
}

pub async fn alarms(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(p): Query<AlarmParams>,
) -> ApiResult<Json<AlarmPage>> {
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
    Ok(Json(AlarmPage { alarms, next_before }))
}

pub async fn alarm(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<AlarmWithComments>> {
    let (alarm, comments) = state.rules.alarm(id, scope(&caller)).await?;
    Ok(Json(AlarmWithComments { alarm, comments }))
}

pub async fn acknowledge(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<AlarmAnswer>> {
    require_write(&caller)?;
    let alarm = state.rules.acknowledge(id, &caller.name, scope(&caller)).await?;
    audit(&state, &caller, "alarm.acknowledge", id.to_string(), Some(&alarm.tenant), json!({"device": alarm.device})).await;
    Ok(Json(AlarmAnswer { alarm }))
}

pub async fn clear(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<i64>) -> ApiResult<Json<AlarmAnswer>> {
    require_write(&caller)?;
    let alarm = state.rules.clear(id, &caller.name, scope(&caller)).await?;
    audit(&state, &caller, "alarm.clear", id.to_string(), Some(&alarm.tenant), json!({"device": alarm.device})).await;
    Ok(Json(AlarmAnswer { alarm }))
}

/// Body of `POST /api/v1/alarms/{id}/comments`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    /// 1 to 4000 characters once trimmed.
    text: String,
}

pub async fn comment(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<CommentAnswer>)> {
    require_write(&caller)?;
    let new: NewComment = parse_json(body)?;
    let comment = state.rules.comment(id, &caller.name, &new.text, scope(&caller)).await?;
    Ok((StatusCode::CREATED, Json(CommentAnswer { comment })))
}

/// `?state=&limit=&before=` of `GET /api/v1/outbox`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboxParams {
    /// Only entries in this state: `pending` (waiting or retrying), `delivered` or `dead`
    /// (given up on).
    #[schemars(extend("enum" = ["pending", "delivered", "dead"]))]
    state: Option<String>,
    /// Entries per page, 1 to 1000 (default 100; values outside are brought within).
    limit: Option<usize>,
    /// Only entries with a smaller id: `next_before` of the previous page.
    before: Option<i64>,
}

pub async fn outbox(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(p): Query<OutboxParams>,
) -> ApiResult<Json<OutboxPage>> {
    if let Some(s) = p.state.as_deref()
        && !matches!(s, "pending" | "delivered" | "dead")
    {
        return Err(ApiError::bad_input(format!("state `{s}`: use pending, delivered or dead")));
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1_000);
    let entries = state.rules.outbox(p.state.as_deref(), scope(&caller), limit, p.before).await?;
    let next_before = (entries.len() == limit).then(|| entries.last().map(|e| e.id)).flatten();
    Ok(Json(OutboxPage { entries, next_before }))
}

pub async fn retry(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<OutboxEntryAnswer>> {
    require_write(&caller)?;
    let entry = state.rules.retry_delivery(id, scope(&caller)).await?;
    audit(&state, &caller, "outbox.retry", id.to_string(), scope(&caller), json!({"key": entry.idempotency_key})).await;
    Ok(Json(OutboxEntryAnswer { entry }))
}
