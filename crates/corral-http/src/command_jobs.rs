//! Bulk commands: the same command to a selection of devices, as one job whose progress is counted
//! by state.
//!
//! - `POST /api/v1/command-jobs` `{"name", "payload", "timeout", "target": {"profile", "site",
//!   "tag", "tenant", "where"}}`: every field of `target` narrows (at least one is required);
//!   `where` is an SQL condition over the `devices` table (`json_get_str(attributes, 'zone') =
//!   'north'`). Only active devices are selected, at most [`MAX_JOB_DEVICES`]. All commands are
//!   recorded in one transaction, then handed to the doors. Operators and admins only, audited as
//!   `command.job`; answers `201` with `{"job", "devices", "counts"}`.
//! - `GET /api/v1/command-jobs/{job}`: `{"job", "counts": {"queued": 3, ...}, "total"}`.
//!
//! The selection runs as the caller: the registry listing and the SQL engine both apply its
//! tenant scope, so a scoped token can only ever reach its own tenant's devices.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::commands::{require_write, scope, timeout_ms};
use crate::error::{ApiError, ApiResult};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_commands::{CommandState, NewCommand};
use corral_model::{DeviceId, TenantId};
use corral_registry::{DeviceFilter, DeviceStatus, Principal};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The most devices one job may address: a fleet-wide job in one transaction, bounded so a typo
/// in `where` cannot queue millions of commands.
pub const MAX_JOB_DEVICES: usize = 100_000;
/// Registry pages are at most this long.
const REGISTRY_PAGE: u32 = 1000;

/// Body of `POST /api/v1/command-jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    name: String,
    #[serde(default)]
    payload: Value,
    timeout: Option<u64>,
    target: Target,
}

/// Which devices a job addresses; every given field narrows.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    /// An SQL condition over `devices`.
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    condition: Option<String>,
}

impl Target {
    /// Whether the registry's filters are needed (as opposed to `where` alone).
    fn filters_registry(&self) -> bool {
        self.profile.is_some() || self.site.is_some() || self.tag.is_some() || self.tenant.is_some()
    }
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    require_write(&caller, "send commands")?;
    let request: JobRequest = parse_json(body)?;
    let timeout_ms = timeout_ms(request.timeout)?;
    let job = corral_commands::model::new_job_id();
    let template = |device: DeviceId, tenant: TenantId| NewCommand {
        device,
        tenant,
        name: request.name.clone(),
        payload: request.payload.clone(),
        timeout_ms,
        job: Some(job.clone()),
        created_by: caller.name.clone(),
        key: None,
    };
    // Check the name before selecting: a bad name should not cost a fleet-wide scan.
    template(DeviceId::new("probe")?, TenantId::default_tenant()).check().map_err(ApiError::bad_input)?;
    let devices = select(&state, &caller, &request.target).await?;
    if devices.is_empty() {
        return Err(ApiError::bad_input("the target selects no device (only active devices are selected)"));
    }
    let commands: Vec<NewCommand> = devices.into_iter().map(|(device, tenant)| template(device, tenant)).collect();
    let created = state.tracker.create_many(commands).await?;
    let counts = state.tracker.job_counts(&job, scope(&caller)).await?;
    let detail = json!({ "name": request.name, "devices": created.len(), "target": request.target });
    if let Err(e) = state.registry.record_audit(&caller, "command.job", &job, caller.tenant.as_ref(), detail).await {
        tracing::error!(%job, error = %e, "audit entry not written");
    }
    tracing::info!(%job, devices = created.len(), by = %caller.name, "command job created");
    let body = json!({ "job": job, "devices": created.len(), "counts": counts_json(&counts) });
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/api/v1/command-jobs/{job}"))], Json(body)).into_response())
}

pub async fn show(State(state): State<AppState>, Caller(caller): Caller, Path(job): Path<String>) -> ApiResult<Json<Value>> {
    let counts = state.tracker.job_counts(&job, scope(&caller)).await?;
    let total: u64 = counts.values().sum();
    if total == 0 {
        return Err(ApiError::new(corral_model::ErrorKind::NotFound, format!("no command job {job:?}")));
    }
    Ok(Json(json!({ "job": job, "counts": counts_json(&counts), "total": total })))
}

/// `{"queued": 3, "succeeded": 1}`: the states that have commands.
fn counts_json(counts: &BTreeMap<CommandState, u64>) -> Value {
    Value::Object(counts.iter().map(|(state, n)| (state.as_str().to_string(), json!(n))).collect::<Map<_, _>>())
}

/// The active devices `target` selects as `caller` sees them, each with its tenant, in id order.
async fn select(state: &AppState, caller: &Principal, target: &Target) -> ApiResult<BTreeMap<DeviceId, TenantId>> {
    let by_registry = if target.filters_registry() { Some(listed(state, caller, target).await?) } else { None };
    let by_sql = match &target.condition {
        Some(condition) => Some(queried(state, caller, condition).await?),
        None => None,
    };
    match (by_registry, by_sql) {
        (Some(listed), Some(queried)) => Ok(listed.into_iter().filter(|(id, _)| queried.contains_key(id)).collect()),
        (Some(only), None) | (None, Some(only)) => Ok(only),
        (None, None) => Err(ApiError::bad_input(
            "target needs at least one of profile, site, tag, tenant or where, like {\"profile\": \"meter\"}",
        )),
    }
}

fn too_many() -> ApiError {
    ApiError::bad_input(format!("the target selects more than {MAX_JOB_DEVICES} devices; narrow it"))
}

/// Walks the registry's pages for the profile/site/tag/tenant filters.
async fn listed(state: &AppState, caller: &Principal, target: &Target) -> ApiResult<BTreeMap<DeviceId, TenantId>> {
    let mut filter = DeviceFilter {
        tenant: target.tenant.as_deref().map(TenantId::new).transpose()?,
        site: target.site.clone(),
        profile: target.profile.clone(),
        tag: target.tag.clone(),
        status: Some(DeviceStatus::Active),
        limit: Some(REGISTRY_PAGE),
        ..DeviceFilter::default()
    };
    let mut devices = BTreeMap::new();
    loop {
        let page = state.registry.list_devices(caller, &filter).await?;
        if page.total > MAX_JOB_DEVICES as u64 {
            return Err(too_many());
        }
        devices.extend(page.devices.into_iter().map(|d| (d.id, d.tenant)));
        match page.next {
            Some(next) if filter.after.as_ref() != Some(&next) => filter.after = Some(next),
            _ => return Ok(devices),
        }
    }
}

/// Runs `SELECT device, tenant FROM devices WHERE status = 'active' AND (<where>)` in the
/// caller's tenant scope.
async fn queried(state: &AppState, caller: &Principal, condition: &str) -> ApiResult<BTreeMap<DeviceId, TenantId>> {
    enclosed(condition).map_err(|e| ApiError::bad_input(format!("where: {e}")))?;
    // The condition on lines of its own, so nothing in it can reach past the parentheses.
    let sql = format!("SELECT device, tenant FROM devices WHERE status = 'active' AND (\n{condition}\n)");
    let result = state.sql.query(&sql, scope(caller), MAX_JOB_DEVICES).await?;
    if result.truncated {
        return Err(too_many());
    }
    let mut devices = BTreeMap::new();
    for batch in &result.batches {
        let (ids, tenants) = (text_column(batch, 0)?, text_column(batch, 1)?);
        for (id, tenant) in ids.iter().zip(tenants) {
            if let (Some(id), Some(tenant)) = (id, tenant) {
                devices.insert(DeviceId::new(id)?, TenantId::new(tenant)?);
            }
        }
    }
    Ok(devices)
}

/// Column `i` of a result as text, whatever string layout the engine chose.
fn text_column(batch: &RecordBatch, i: usize) -> ApiResult<Vec<Option<String>>> {
    let column = arrow::compute::cast(batch.column(i), &DataType::Utf8)
        .map_err(|e| ApiError(corral_model::WireError::internal(format!("device selection: {e}"))))?;
    let text = column.as_string::<i32>();
    Ok((0..text.len()).map(|row| text.is_valid(row).then(|| text.value(row).to_string())).collect())
}

/// Refuses a `where` that could end the statement or the parentheses around it: a `;`, a
/// comment, a `)` without its `(`, or an unclosed parenthesis or quote. (The SQL engine is
/// read-only and tenant-scoped anyway; this keeps the selection to the active devices.)
fn enclosed(condition: &str) -> Result<(), String> {
    if condition.trim().is_empty() {
        return Err("the condition is empty".into());
    }
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut chars = condition.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            // A doubled quote inside a literal is the quote itself.
            (Some(q), _) if c == q => match chars.peek() {
                Some(&next) if next == q => {
                    chars.next();
                }
                _ => quote = None,
            },
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ';') => return Err("one condition, without ';'".into()),
            (None, '-') if chars.peek() == Some(&'-') => return Err("no comments".into()),
            (None, '/') if chars.peek() == Some(&'*') => return Err("no comments".into()),
            (None, '(') => depth += 1,
            (None, ')') => depth = depth.checked_sub(1).ok_or("a ')' without its '('")?,
            (None, _) => {}
        }
    }
    match (quote, depth) {
        (Some(q), _) => Err(format!("an unclosed {q}")),
        (None, 0) => Ok(()),
        (None, _) => Err("an unclosed '('".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_stays_inside_its_parentheses() {
        for ok in [
            "json_get_str(attributes, 'zone') = 'north'",
            "site = 'a;b' OR site = 'it''s (here'",
            "(profile = 'meter') AND \"site\" IS NOT NULL",
            "x - 1 > 0",
        ] {
            assert_eq!(enclosed(ok), Ok(()), "{ok}");
        }
        for bad in ["", "  ", "1=1; DROP TABLE devices", "1=1) OR (1=1", "1=1 -- ", "1=1 /* */", "(1=1", "site = 'a", "1=1)"] {
            assert!(enclosed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_job_request_refuses_unknown_fields_and_names_where() {
        let job: JobRequest =
            serde_json::from_str(r#"{"name": "reboot", "target": {"where": "site = 'x'", "profile": "meter"}}"#).unwrap();
        assert_eq!((job.target.condition.as_deref(), job.target.profile.as_deref()), (Some("site = 'x'"), Some("meter")));
        assert!(serde_json::from_str::<JobRequest>(r#"{"name": "x", "target": {"zone": "n"}}"#).is_err());
        assert!(serde_json::from_str::<JobRequest>(r#"{"name": "x", "target": {}, "devices": []}"#).is_err());
    }
}
