//! Firmware and configuration campaigns.
//!
//! - `POST /api/v1/campaigns` `{"name", "artifact": "art_…" | "configuration": {…}, "target":
//!   {"profile", "site", "tag", "tenant", "where"}, "plan": {"waves", "concurrency",
//!   "min_success_ratio", "abort": {"failure_ratio", "failures"}, "device_timeout_s", "window":
//!   {"start", "end"}, "max_per_minute"}, "dynamic": false, "start": true, "tenant"}`: selects the devices now,
//!   records the campaign with each device's wave (durable when answered), and starts it unless
//!   `"start": false`. Operators and admins; audited as `campaign.create`; `201`.
//! - `GET /api/v1/campaigns` (`after`, `limit`): newest first.
//! - `GET /api/v1/campaigns/{id}`: the campaign with its progress: counts by state in all and per
//!   wave, and the most frequent failure reasons.
//! - `GET /api/v1/campaigns/{id}/devices?state=&after=&limit=`: its devices, a page at a time.
//! - `POST /api/v1/campaigns/{id}/start|pause|resume|cancel`: operators and admins; audited as
//!   `campaign.<action>`.
//!
//! A campaign belongs to one tenant (the caller's, when it is scoped) and only ever selects that
//! tenant's devices and artifacts: naming another tenant is `403`, another tenant's artifact `404`.

use crate::AppState;
use crate::artifacts::acting_tenant;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::commands::{require_write, scope};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use crate::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_campaigns::{Action, Campaign, CampaignError, DeviceState, NewCampaign, Plan, Progress, Rollout};
use corral_model::DeviceId;
use corral_registry::Target;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use crate::openapi::{Api, Operation};

const TAG: &str = "campaigns";

pub(crate) fn routes(api: Api) -> Api {
    api
        .post("/api/v1/campaigns", create, Operation::new(TAG, "TODO"))
        .get("/api/v1/campaigns", list, Operation::new(TAG, "TODO"))
        .get("/api/v1/campaigns/{id}", show, Operation::new(TAG, "TODO"))
        .get("/api/v1/campaigns/{id}/devices", devices, Operation::new(TAG, "TODO"))
        .post("/api/v1/campaigns/{id}/{action}", act, Operation::new(TAG, "TODO"))
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

impl From<CampaignError> for ApiError {
    fn from(e: CampaignError) -> Self {
        ApiError(e.into())
    }
}

/// Body of `POST /api/v1/campaigns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    name: String,
    #[serde(default)]
    artifact: Option<String>,
    #[serde(default)]
    configuration: Option<Map<String, Value>>,
    target: Target,
    #[serde(default)]
    plan: Plan,
    #[serde(default)]
    dynamic: bool,
    #[serde(default = "yes")]
    start: bool,
    #[serde(default)]
    tenant: Option<String>,
}

fn yes() -> bool {
    true
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    require_write(&caller, "run campaigns")?;
    let request: CampaignRequest = parse_json(body)?;
    let tenant = acting_tenant(&caller, request.tenant.as_deref())?;
    if let Some(named) = &request.target.tenant
        && named != tenant.as_str()
    {
        return Err(ApiError::forbidden(format!("a campaign of tenant {tenant} cannot target tenant {named:?}")));
    }
    let rollout = match (request.artifact, request.configuration) {
        (Some(artifact), None) => Rollout::Firmware { artifact, version: String::new() },
        (None, Some(desired)) => Rollout::Configuration { desired },
        _ => return Err(ApiError::bad_input("give either artifact (firmware) or configuration (a desired-twin patch)")),
    };
    let new = NewCampaign {
        tenant: tenant.clone(),
        name: request.name,
        rollout,
        target: request.target,
        dynamic: request.dynamic,
        plan: request.plan,
        start: request.start,
        created_by: caller.name.clone(),
    };
    let campaign = state.rollouts.create(new).await?;
    let detail = json!({ "name": campaign.name, "rollout": campaign.rollout, "target": campaign.target });
    if let Err(e) = state.registry.record_audit(&caller, "campaign.create", &campaign.id, Some(&tenant), detail).await {
        tracing::error!(campaign = %campaign.id, error = %e, "audit entry not written");
    }
    let progress = state.rollouts.progress(&campaign.id, None).await?;
    let location = format!("/api/v1/campaigns/{}", campaign.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(progress_json(&progress))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct PageParams {
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Value>> {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let campaigns = state.rollouts.list(scope(&caller), page.after.as_deref(), limit).await?;
    let mut shown = Vec::with_capacity(campaigns.len());
    for campaign in &campaigns {
        shown.push(progress_json(&state.rollouts.progress(&campaign.id, None).await?));
    }
    let next = (campaigns.len() == limit).then(|| campaigns.last().map(|c| c.id.clone())).flatten();
    Ok(Json(json!({ "campaigns": shown, "next": next })))
}

pub async fn show(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(progress_json(&state.rollouts.progress(&id, scope(&caller)).await?)))
}

#[derive(Debug, Deserialize)]
pub struct DeviceParams {
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn devices(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(params): Query<DeviceParams>,
) -> ApiResult<Json<Value>> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let wanted: Option<DeviceState> = params.state.as_deref().map(str::parse).transpose().map_err(ApiError::bad_input)?;
    let after = params.after.as_deref().map(DeviceId::new).transpose()?;
    let devices = state.rollouts.devices(&id, scope(&caller), wanted, after.as_ref(), limit).await?;
    let next = (devices.len() == limit).then(|| devices.last().map(|d| d.device.to_string())).flatten();
    let shown: Vec<Value> = devices
        .iter()
        .map(|d| {
            json!({
                "device": d.device, "tenant": d.tenant, "wave": d.wave + 1, "state": d.state, "reason": d.reason,
                "command": d.command, "notified_at_ms": d.notified_at_ms, "updated_at_ms": d.updated_at_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "devices": shown, "next": next })))
}

pub async fn act(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    require_write(&caller, "run campaigns")?;
    let action: Action = action.parse()?;
    let campaign = state.rollouts.act(&id, scope(&caller), action, &caller.name).await?;
    let what = format!("campaign.{}", action.as_str());
    if let Err(e) =
        state.registry.record_audit(&caller, &what, &id, Some(&campaign.tenant), json!({ "state": campaign.state })).await
    {
        tracing::error!(campaign = %id, error = %e, "audit entry not written");
    }
    Ok(Json(progress_json(&state.rollouts.progress(&id, None).await?)))
}

/// The campaign as the API shows it: its record, counts by state in all and per wave (waves
/// counted from 1), and the most frequent failure reasons.
pub fn progress_json(progress: &Progress) -> Value {
    let Progress { campaign, counts, reasons } = progress;
    let mut total: BTreeMap<&str, u64> = BTreeMap::new();
    let mut waves: Vec<(u64, BTreeMap<&str, u64>)> = vec![(0, BTreeMap::new()); campaign.plan.waves.len().max(1)];
    for count in counts {
        *total.entry(count.state.as_str()).or_insert(0) += count.devices;
        let wave = &mut waves[(count.wave as usize).min(campaign.plan.waves.len().max(1) - 1)];
        wave.0 += count.devices;
        *wave.1.entry(count.state.as_str()).or_insert(0) += count.devices;
    }
    let waves: Vec<Value> = waves
        .iter()
        .enumerate()
        .map(|(i, (devices, states))| json!({ "wave": i + 1, "size": campaign.plan.waves.get(i), "devices": devices, "states": states }))
        .collect();
    let mut value = campaign_json(campaign);
    value["devices"] = json!(total.values().sum::<u64>());
    value["states"] = json!(total);
    value["waves"] = json!(waves);
    value["failures"] = json!(reasons.iter().map(|(reason, n)| json!({ "reason": reason, "devices": n })).collect::<Vec<_>>());
    value
}

fn campaign_json(campaign: &Campaign) -> Value {
    let mut value = serde_json::to_value(campaign).unwrap_or_default();
    // The rollout's fields at the top, as they were given: `artifact`/`version` or `configuration`.
    if let Some(object) = value.as_object_mut() {
        object.remove("rollout");
        match &campaign.rollout {
            Rollout::Firmware { artifact, version } => {
                object.insert("kind".into(), json!("firmware"));
                object.insert("artifact".into(), json!(artifact));
                object.insert("version".into(), json!(version));
            }
            Rollout::Configuration { desired } => {
                object.insert("kind".into(), json!("configuration"));
                object.insert("configuration".into(), Value::Object(desired.clone()));
            }
        }
    }
    value
}
