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
use crate::extract::{Path, Query};
use crate::openapi::{Api, Operation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_campaigns::model::WaveSize;
use corral_campaigns::{Action, Campaign, CampaignError, CampaignState, DeviceState, NewCampaign, Plan, Progress, Rollout};
use corral_model::{DeviceId, TenantId};
use corral_registry::Target;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

const TAG: &str = "campaigns";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/campaigns",
        create,
        Operation::new(TAG, "Creates a firmware or configuration campaign")
            .describe(
                "Selects the target's active devices now (at most 100,000), records the campaign with each device's \
                wave (durable when answered) and starts it unless `\"start\": false`. Give either `artifact` \
                (firmware) or `configuration` (a desired-twin patch). The campaign and its artifact belong to the \
                caller's tenant: naming another tenant is 403, another tenant's (or a missing) artifact 404. \
                Operators and admins; audited as `campaign.create`. `Location` names the new campaign.",
            )
            .body::<CampaignRequest>()
            .returns::<CampaignShown>(201, "Created (and started, unless asked not to), with its progress")
            .answer_header(201, "Location", "The new campaign: `/api/v1/campaigns/<id>`")
            .errors(&[404]),
    )
    .get(
        "/api/v1/campaigns",
        list,
        Operation::new(TAG, "Lists campaigns with their progress, newest first, one page at a time")
            .query::<PageParams>()
            .returns::<CampaignPage>(200, "One page of campaigns"),
    )
    .get(
        "/api/v1/campaigns/{id}",
        show,
        Operation::new(TAG, "One campaign with its progress")
            .describe("Its record, its devices counted by state in all and per wave, and the most frequent failure reasons.")
            .path::<String>("id", "The campaign (`cmp_…`)")
            .returns::<CampaignShown>(200, "The campaign and its progress"),
    )
    .get(
        "/api/v1/campaigns/{id}/devices",
        devices,
        Operation::new(TAG, "Lists a campaign's devices, one page at a time")
            .describe("In device id order, optionally only those in one state.")
            .path::<String>("id", "The campaign (`cmp_…`)")
            .query::<DeviceParams>()
            .returns::<CampaignDevicePage>(200, "One page of the campaign's devices"),
    )
    .post(
        "/api/v1/campaigns/{id}/{action}",
        act,
        Operation::new(TAG, "Starts, pauses, resumes or cancels a campaign")
            .describe(
                "`start` a draft, `pause` a running campaign, `resume` a paused one, `cancel` any that has not \
                ended; anything else is 400, and an action that does not fit the campaign's state (resuming a \
                cancelled campaign) is 409. Operators and admins; audited as `campaign.<action>`.",
            )
            .path::<String>("id", "The campaign (`cmp_…`)")
            .path::<Action>("action", "What to do: start, pause, resume or cancel")
            .returns::<CampaignShown>(200, "The campaign as it is after, with its progress")
            .errors(&[409]),
    )
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

impl From<CampaignError> for ApiError {
    fn from(e: CampaignError) -> Self {
        ApiError(e.into())
    }
}

/// Body of `POST /api/v1/campaigns`: what to roll out (`artifact` or `configuration`, one of
/// them), to which devices, and how.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    /// 1 to 200 characters.
    name: String,
    /// A firmware campaign: the artifact (`art_…`) of the campaign's tenant to install.
    #[serde(default)]
    artifact: Option<String>,
    /// A configuration campaign: the merge patch (RFC 7386, at least one key) for each device's
    /// desired twin; a device has succeeded once its reported twin holds every patched value.
    #[serde(default)]
    configuration: Option<Map<String, Value>>,
    /// Which devices (active ones only).
    target: Target,
    /// Waves, concurrency, thresholds, window; one wave of every device by default.
    #[serde(default)]
    plan: Plan,
    /// Devices that join the target while it runs are added to its last wave.
    #[serde(default)]
    dynamic: bool,
    /// Start at once (the default), or create a draft to start later.
    #[serde(default = "yes")]
    start: bool,
    /// The campaign's tenant: an unscoped token's choice (`default` when absent); a scoped
    /// token's own tenant only.
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
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(CampaignShown::from(&progress))).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PageParams {
    /// The last campaign id of the previous page (its `next`).
    after: Option<String>,
    /// Campaigns per page: 100 by default, at most 1000 (larger values are lowered to it).
    limit: Option<usize>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct CampaignPage {
    campaigns: Vec<CampaignShown>,
    /// Pass as `after` for the next page; null on the last.
    next: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<CampaignPage>> {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let campaigns = state.rollouts.list(scope(&caller), page.after.as_deref(), limit).await?;
    let mut shown = Vec::with_capacity(campaigns.len());
    for campaign in &campaigns {
        shown.push(CampaignShown::from(&state.rollouts.progress(&campaign.id, None).await?));
    }
    let next = (campaigns.len() == limit).then(|| campaigns.last().map(|c| c.id.clone())).flatten();
    Ok(Json(CampaignPage { campaigns: shown, next }))
}

pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignShown>> {
    Ok(Json(CampaignShown::from(&state.rollouts.progress(&id, scope(&caller)).await?)))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DeviceParams {
    /// Only the devices in this state.
    #[schemars(with = "Option<DeviceState>")]
    state: Option<String>,
    /// The last device id of the previous page (its `next`).
    #[schemars(with = "Option<DeviceId>")]
    after: Option<String>,
    /// Devices per page: 100 by default, at most 1000 (larger values are lowered to it).
    limit: Option<usize>,
}

/// One device in a campaign.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CampaignDeviceShown {
    device: DeviceId,
    tenant: TenantId,
    /// Its wave, counted from 1.
    wave: u32,
    state: DeviceState,
    /// The device's reason for a failure or roll-back, or the platform's for a time-out.
    reason: Option<String>,
    /// The `firmware.update` command it was sent (firmware campaigns), once notified.
    command: Option<String>,
    /// When it was notified, Unix milliseconds; null while pending.
    notified_at_ms: Option<i64>,
    /// When its state last changed, Unix milliseconds.
    updated_at_ms: i64,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct CampaignDevicePage {
    devices: Vec<CampaignDeviceShown>,
    /// Pass as `after` for the next page; null on the last.
    next: Option<String>,
}

pub async fn devices(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(params): Query<DeviceParams>,
) -> ApiResult<Json<CampaignDevicePage>> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let wanted: Option<DeviceState> = params.state.as_deref().map(str::parse).transpose().map_err(ApiError::bad_input)?;
    let after = params.after.as_deref().map(DeviceId::new).transpose()?;
    let devices = state.rollouts.devices(&id, scope(&caller), wanted, after.as_ref(), limit).await?;
    let next = (devices.len() == limit).then(|| devices.last().map(|d| d.device.to_string())).flatten();
    let devices = devices
        .into_iter()
        .map(|d| CampaignDeviceShown {
            device: d.device,
            tenant: d.tenant,
            wave: d.wave + 1,
            state: d.state,
            reason: d.reason,
            command: d.command,
            notified_at_ms: d.notified_at_ms,
            updated_at_ms: d.updated_at_ms,
        })
        .collect();
    Ok(Json(CampaignDevicePage { devices, next }))
}

pub async fn act(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<CampaignShown>> {
    require_write(&caller, "run campaigns")?;
    let action: Action = action.parse()?;
    let campaign = state.rollouts.act(&id, scope(&caller), action, &caller.name).await?;
    let what = format!("campaign.{}", action.as_str());
    if let Err(e) =
        state.registry.record_audit(&caller, &what, &id, Some(&campaign.tenant), json!({ "state": campaign.state })).await
    {
        tracing::error!(campaign = %id, error = %e, "audit entry not written");
    }
    Ok(Json(CampaignShown::from(&state.rollouts.progress(&id, None).await?)))
}

/// A campaign as the API shows it: its record with what it rolls out at the top level (as it
/// was given), its devices counted by state in all and per wave (waves counted from 1), and the
/// most frequent failure reasons.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CampaignShown {
    /// `cmp_` and 16 hex digits.
    id: String,
    tenant: TenantId,
    name: String,
    #[serde(flatten)]
    rollout: RolloutShown,
    target: Target,
    /// Devices that join the target while it runs are added to its last wave.
    dynamic: bool,
    plan: Plan,
    state: CampaignState,
    /// Why it was aborted (or who cancelled it).
    reason: Option<String>,
    created_by: String,
    /// Unix milliseconds.
    created_at_ms: i64,
    /// Unix milliseconds; null for a draft.
    started_at_ms: Option<i64>,
    /// Unix milliseconds; null until it ends.
    finished_at_ms: Option<i64>,
    /// Its devices, in all.
    devices: u64,
    /// Its devices by state (states without devices are absent).
    states: BTreeMap<DeviceState, u64>,
    /// Per wave, in order.
    waves: Vec<WaveShown>,
    /// The most frequent failure reasons (up to 10), most devices first.
    failures: Vec<FailureShown>,
}

/// What a campaign rolls out.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RolloutShown {
    /// An artifact: each device gets a `firmware.update` command with its manifest and a
    /// download URL.
    Firmware {
        /// The artifact (`art_…`).
        artifact: String,
        /// The artifact's version.
        version: String,
    },
    /// A desired-twin patch each device's desired document gets.
    Configuration {
        /// The merge patch (RFC 7386).
        configuration: Map<String, Value>,
    },
}

/// One wave of a campaign.
#[derive(Serialize, schemars::JsonSchema)]
pub struct WaveShown {
    /// Counted from 1.
    wave: usize,
    /// Its cumulative size as the plan gives it.
    size: Option<WaveSize>,
    /// Its devices.
    devices: u64,
    /// Its devices by state (states without devices are absent).
    states: BTreeMap<DeviceState, u64>,
}

/// A failure reason and how many devices gave it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct FailureShown {
    reason: String,
    devices: u64,
}

impl From<&Progress> for CampaignShown {
    fn from(progress: &Progress) -> Self {
        let Progress { campaign, counts, reasons } = progress;
        let last_wave = campaign.plan.waves.len().max(1) - 1;
        let mut total: BTreeMap<DeviceState, u64> = BTreeMap::new();
        let mut waves: Vec<(u64, BTreeMap<DeviceState, u64>)> = vec![(0, BTreeMap::new()); last_wave + 1];
        for count in counts {
            *total.entry(count.state).or_insert(0) += count.devices;
            let wave = &mut waves[(count.wave as usize).min(last_wave)];
            wave.0 += count.devices;
            *wave.1.entry(count.state).or_insert(0) += count.devices;
        }
        let waves = waves
            .into_iter()
            .enumerate()
            .map(|(i, (devices, states))| WaveShown { wave: i + 1, size: campaign.plan.waves.get(i).copied(), devices, states })
            .collect();
        let Campaign {
            id,
            tenant,
            name,
            rollout,
            target,
            dynamic,
            plan,
            state,
            reason,
            created_by,
            created_at_ms,
            started_at_ms,
            finished_at_ms,
        } = campaign.clone();
        // The rollout's fields at the top, as they were given: `artifact`/`version` or `configuration`.
        let rollout = match rollout {
            Rollout::Firmware { artifact, version } => RolloutShown::Firmware { artifact, version },
            Rollout::Configuration { desired } => RolloutShown::Configuration { configuration: desired },
        };
        CampaignShown {
            id,
            tenant,
            name,
            rollout,
            target,
            dynamic,
            plan,
            state,
            reason,
            created_by,
            created_at_ms,
            started_at_ms,
            finished_at_ms,
            devices: total.values().sum(),
            states: total,
            waves,
            failures: reasons.iter().map(|(reason, n)| FailureShown { reason: reason.clone(), devices: *n }).collect(),
        }
    }
}
