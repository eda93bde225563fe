//! What a campaign is: what it rolls out (an artifact or a desired-twin patch), to which devices
//! (a [`Target`]), how (the [`Plan`]: waves, concurrency, thresholds, a maintenance window), and
//! the states a campaign and each of its devices move through.

use corral_model::{DeviceId, TenantId};
use corral_registry::Target;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// Where a campaign is. `completed`, `aborted` and `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Created with `"start": false`; nothing is sent until it is started.
    Draft,
    /// Notifying devices wave by wave and following their reports.
    Running,
    /// Paused by an operator: no device is notified; reports are still recorded.
    Paused,
    /// Every wave is done (a dynamic campaign completes only when it is cancelled or ended).
    Completed,
    /// Stopped by a threshold (too many failures, a wave below the minimum success ratio).
    Aborted,
    /// Stopped by an operator.
    Cancelled,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Draft => "draft",
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Completed => "completed",
            CampaignState::Aborted => "aborted",
            CampaignState::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, CampaignState::Completed | CampaignState::Aborted | CampaignState::Cancelled)
    }
}

impl fmt::Display for CampaignState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CampaignState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(Value::String(s.to_string())).map_err(|_| format!("unknown campaign state {s:?}"))
    }
}

/// Where one device is in a campaign. The order is the order of the steps; a device only moves
/// forward, and the last four are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "CampaignDeviceState")]
pub enum DeviceState {
    /// In the campaign, not told yet.
    Pending,
    /// Told (the firmware command was issued, the desired patch applied).
    Notified,
    /// The device reports it is downloading.
    Downloading,
    /// The device reports it has the whole image (or configuration).
    Downloaded,
    /// The device reports it is installing.
    Installing,
    /// The device reports it runs the new version (or holds the configuration).
    Succeeded,
    /// The device reports it failed (with its reason).
    Failed,
    /// The device installed it, found it bad and went back to its previous version.
    RolledBack,
    /// No final report within the plan's device timeout.
    TimedOut,
}

impl DeviceState {
    pub const ALL: [DeviceState; 9] = [
        DeviceState::Pending,
        DeviceState::Notified,
        DeviceState::Downloading,
        DeviceState::Downloaded,
        DeviceState::Installing,
        DeviceState::Succeeded,
        DeviceState::Failed,
        DeviceState::RolledBack,
        DeviceState::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::Notified => "notified",
            DeviceState::Downloading => "downloading",
            DeviceState::Downloaded => "downloaded",
            DeviceState::Installing => "installing",
            DeviceState::Succeeded => "succeeded",
            DeviceState::Failed => "failed",
            DeviceState::RolledBack => "rolled-back",
            DeviceState::TimedOut => "timed-out",
        }
    }

    pub fn is_final(self) -> bool {
        self >= DeviceState::Succeeded
    }

    /// Counts against the abort thresholds.
    pub fn is_failure(self) -> bool {
        self.is_final() && self != DeviceState::Succeeded
    }

    /// Told and not final: counts against the concurrency cap.
    pub fn in_flight(self) -> bool {
        self >= DeviceState::Notified && !self.is_final()
    }

    /// The states a device may report (`pending` and `timed-out` are the platform's to set).
    pub fn reportable(self) -> bool {
        !matches!(self, DeviceState::Pending | DeviceState::TimedOut)
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(Value::String(s.to_string())).map_err(|_| format!("unknown device state {s:?}"))
    }
}

/// How big a wave is: cumulative, so `["1%", "10%", "50%", "100%"]` notifies 1 % of the devices,
/// then up to 10 % in all, and so on; `[10, 100]` the first 10, then up to 100. The last wave
/// always takes every remaining device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    Percent(f64),
    Count(u64),
}

impl WaveSize {
    /// How many devices of `total` the waves up to this one hold together (at least one).
    pub fn cumulative(self, total: usize) -> usize {
        let n = match self {
            WaveSize::Percent(p) => ((p / 100.0) * total as f64).ceil() as usize,
            WaveSize::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        n.clamp(1, total.max(1))
    }
}

impl Serialize for WaveSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WaveSize::Percent(p) => s.serialize_str(&format!("{p}%")),
            WaveSize::Count(n) => s.serialize_u64(*n),
        }
    }
}

/// On the wire: a whole number of devices above 0, or a string with a percentage above 0 and up
/// to 100 (`"10%"`, `"2.5%"`).
impl schemars::JsonSchema for WaveSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WaveSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A wave's cumulative size: a number of devices (`10`), or a percentage of the \
                campaign's devices above 0 and up to 100 (`\"10%\"`).",
            "anyOf": [
                { "type": "integer", "format": "uint64", "minimum": 1 },
                { "type": "string", "pattern": "^\\s*\\+?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?\\s*%$" },
            ],
        })
    }
}

impl<'de> Deserialize<'de> for WaveSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::Number(n) => match n.as_u64() {
                Some(n) if n > 0 => Ok(WaveSize::Count(n)),
                _ => Err(D::Error::custom("a wave count is a whole number above 0")),
            },
            Value::String(s) => match s.strip_suffix('%').map(|p| p.trim().parse::<f64>()) {
                Some(Ok(p)) if p > 0.0 && p <= 100.0 => Ok(WaveSize::Percent(p)),
                _ => Err(D::Error::custom(format!("a wave is a count (10) or a percentage up to 100 (\"10%\"), not {s:?}"))),
            },
            other => Err(D::Error::custom(format!("a wave is a count (10) or a percentage (\"10%\"), not {other}"))),
        }
    }
}

/// When devices may be notified: every day from `start` to `end` (UTC, `HH:MM`); a window that
/// ends before it starts runs over midnight (`22:00`–`04:00`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MaintenanceWindow")]
pub struct Window {
    /// `HH:MM`, UTC: from when devices may be notified each day.
    pub start: String,
    /// `HH:MM`, UTC: until when (exclusive); before `start` for a window over midnight.
    pub end: String,
}

impl Window {
    fn minutes(hhmm: &str) -> Result<u32, String> {
        let (h, m) = hhmm.split_once(':').ok_or_else(|| format!("{hhmm:?} is not HH:MM"))?;
        match (h.parse::<u32>(), m.parse::<u32>()) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 && m.to_string().len() <= 2 => Ok(h * 60 + m),
            _ => Err(format!("{hhmm:?} is not HH:MM (00:00 to 23:59)")),
        }
    }

    pub fn check(&self) -> Result<(), String> {
        Self::minutes(&self.start)?;
        Self::minutes(&self.end)?;
        Ok(())
    }

    /// Whether `now_ms` (Unix ms) falls inside the window.
    pub fn contains(&self, now_ms: i64) -> bool {
        let (Ok(start), Ok(end)) = (Self::minutes(&self.start), Self::minutes(&self.end)) else { return false };
        let minute = u32::try_from(now_ms.rem_euclid(86_400_000) / 60_000).unwrap_or(0);
        if start <= end { (start..end).contains(&minute) } else { minute >= start || minute < end }
    }
}

/// When to stop on failures within a wave; either or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortRule {
    /// Abort once more than this share of the wave's devices failed (0.2 = 20 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_ratio: Option<f64>,
    /// Abort once this many of the wave's devices failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
}

/// How a campaign rolls out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CampaignPlan")]
pub struct Plan {
    /// The waves' cumulative sizes, 1 to 100 of them (`["1%", "10%", "100%"]`, `[10, 100]`); the
    /// last wave always takes every remaining device. One wave of 100 % by default.
    #[serde(default = "Plan::one_wave")]
    pub waves: Vec<WaveSize>,
    /// At most this many devices between notified and final at once (at least 1; 100 by default).
    #[serde(default = "Plan::default_concurrency")]
    pub concurrency: u64,
    /// A wave's share of successes before the next one starts; below it, the campaign aborts.
    /// Between 0 and 1; 0 (the default) lets every wave start whatever the previous one did.
    #[serde(default)]
    pub min_success_ratio: f64,
    /// When to abort on failures within a wave; never, by default.
    #[serde(default)]
    pub abort: AbortRule,
    /// A device that has not reached a final state this long after it was notified times out
    /// (1 second to 30 days; 3600 by default).
    #[serde(default = "Plan::default_device_timeout")]
    pub device_timeout_s: u64,
    /// When devices may be notified each day; any time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// At most this many devices notified per minute, spread evenly over the minute: a campaign
    /// that leaves the platform headroom (telemetry keeps flowing while it runs). None: as fast
    /// as the concurrency cap lets devices finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u64>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            waves: Plan::one_wave(),
            concurrency: Plan::default_concurrency(),
            min_success_ratio: 0.0,
            abort: AbortRule::default(),
            device_timeout_s: Plan::default_device_timeout(),
            window: None,
            max_per_minute: None,
        }
    }
}

impl Plan {
    fn one_wave() -> Vec<WaveSize> {
        vec![WaveSize::Percent(100.0)]
    }
    fn default_concurrency() -> u64 {
        100
    }
    fn default_device_timeout() -> u64 {
        3600
    }

    pub fn check(&self) -> Result<(), String> {
        if self.waves.is_empty() || self.waves.len() > 100 {
            return Err("waves: 1 to 100 waves".into());
        }
        if self.concurrency == 0 {
            return Err("concurrency: at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.min_success_ratio) {
            return Err("min_success_ratio: between 0 and 1".into());
        }
        if let Some(r) = self.abort.failure_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err("abort.failure_ratio: between 0 and 1".into());
        }
        if self.device_timeout_s == 0 || self.device_timeout_s > 30 * 86_400 {
            return Err("device_timeout_s: 1 second to 30 days".into());
        }
        if let Some(window) = &self.window {
            window.check().map_err(|e| format!("window: {e}"))?;
        }
        if self.max_per_minute.is_some_and(|n| n == 0 || n > 1_000_000) {
            return Err("max_per_minute: 1 to 1,000,000 devices".into());
        }
        Ok(())
    }

    /// The cumulative end of each wave for `total` devices: never shrinking, the last one `total`.
    pub fn wave_ends(&self, total: usize) -> Vec<usize> {
        let mut ends: Vec<usize> = Vec::with_capacity(self.waves.len());
        for wave in &self.waves {
            let end = wave.cumulative(total).max(ends.last().copied().unwrap_or(0));
            ends.push(end);
        }
        if let Some(last) = ends.last_mut() {
            *last = total;
        }
        ends
    }
}

/// What a campaign rolls out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Rollout {
    /// An artifact (by id): each device gets a `firmware.update` command with its manifest and a
    /// download URL; success sets its `firmware_version`.
    Firmware { artifact: String, version: String },
    /// A desired-twin patch (RFC 7386): each device's desired document gets it; the device has
    /// succeeded once its reported document holds every patched value (or it reports so).
    Configuration { desired: Map<String, Value> },
}

/// A campaign as it is stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    pub tenant: TenantId,
    pub name: String,
    pub rollout: Rollout,
    pub target: Target,
    /// Devices that join the target while it runs are added to its last wave.
    pub dynamic: bool,
    pub plan: Plan,
    pub state: CampaignState,
    /// Why it was aborted (or who cancelled it).
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

/// What `POST /api/v1/campaigns` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCampaign {
    pub tenant: TenantId,
    pub name: String,
    pub rollout: Rollout,
    pub target: Target,
    pub dynamic: bool,
    pub plan: Plan,
    pub start: bool,
    pub created_by: String,
}

/// One device in a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignDevice {
    pub campaign: String,
    pub device: DeviceId,
    pub tenant: TenantId,
    /// Its wave, from 0.
    pub wave: u32,
    /// Its place in the campaign's order: devices are notified in this order, which is a shuffle
    /// (a hash of campaign and device), so early waves are a sample of the fleet, not its first ids.
    pub position: u64,
    pub state: DeviceState,
    /// The device's reason for a failure or roll-back, or the platform's for a time-out.
    pub reason: Option<String>,
    /// The `firmware.update` command it was sent (firmware campaigns).
    pub command: Option<String>,
    pub notified_at_ms: Option<i64>,
    pub updated_at_ms: i64,
}

impl CampaignDevice {
    /// A device joining `campaign` in `wave` at `position`, not told yet.
    pub fn pending(campaign: &str, device: DeviceId, tenant: TenantId, wave: u32, position: u64, now_ms: i64) -> Self {
        CampaignDevice {
            campaign: campaign.to_string(),
            device,
            tenant,
            wave,
            position,
            state: DeviceState::Pending,
            reason: None,
            command: None,
            notified_at_ms: None,
            updated_at_ms: now_ms,
        }
    }
}

/// A device's report on a campaign, as it puts it in its reported twin:
/// `{"campaigns": {"<campaign-id>": {"state": "downloading", "reason": "..."}}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReport {
    pub device: DeviceId,
    pub campaign: String,
    pub state: DeviceState,
    pub reason: Option<String>,
}

/// The longest failure reason kept.
pub const MAX_REASON_CHARS: usize = 500;

impl DeviceReport {
    /// The campaign reports in a reported-twin patch (or a whole reported document); entries that
    /// are not reports (`null` clearing one, a bad state) are skipped.
    pub fn from_reported(device: &DeviceId, reported: &Map<String, Value>) -> Vec<DeviceReport> {
        let Some(Value::Object(campaigns)) = reported.get("campaigns") else { return Vec::new() };
        campaigns
            .iter()
            .filter_map(|(campaign, status)| {
                let state: DeviceState = status.get("state")?.as_str()?.parse().ok()?;
                if !state.reportable() {
                    return None;
                }
                let reason = status.get("reason").and_then(Value::as_str).map(|r| r.chars().take(MAX_REASON_CHARS).collect());
                Some(DeviceReport { device: device.clone(), campaign: campaign.clone(), state, reason })
            })
            .collect()
    }
}

/// A new campaign id: `cmp_` and 16 random hex digits.
pub fn new_campaign_id() -> String {
    format!("cmp_{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn waves_are_cumulative_and_the_last_takes_the_rest() {
        let plan: Plan = serde_json::from_value(json!({"waves": ["1%", "10%", "50%", "90%"]})).unwrap();
        assert_eq!(plan.wave_ends(200), vec![2, 20, 100, 200]);
        assert_eq!(plan.wave_ends(3), vec![1, 1, 2, 3]);
        let counts: Plan = serde_json::from_value(json!({"waves": [10, 5, 100]})).unwrap();
        assert_eq!(counts.wave_ends(50), vec![10, 10, 50]);
        for bad in [json!({"waves": ["0%"]}), json!({"waves": ["101%"]}), json!({"waves": [0]}), json!({"waves": ["x"]})] {
            assert!(serde_json::from_value::<Plan>(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_value(&plan.waves).unwrap(), json!(["1%", "10%", "50%", "90%"]));
    }

    #[test]
    fn a_window_may_run_over_midnight() {
        let at = |h: i64, m: i64| (h * 60 + m) * 60_000 + 3 * 86_400_000;
        let night = Window { start: "22:00".into(), end: "04:00".into() };
        assert!(
            night.contains(at(23, 0)) && night.contains(at(3, 59)) && !night.contains(at(4, 0)) && !night.contains(at(12, 0))
        );
        let day = Window { start: "09:30".into(), end: "17:00".into() };
        assert!(day.contains(at(9, 30)) && !day.contains(at(9, 29)) && !day.contains(at(17, 0)));
        assert!(Window { start: "24:00".into(), end: "01:00".into() }.check().is_err());
        assert!(Window { start: "9".into(), end: "01:00".into() }.check().is_err());
    }

    #[test]
    fn reports_come_from_the_campaigns_key_of_the_reported_twin() {
        let device = DeviceId::new("truck-1").unwrap();
        let patch = json!({"campaigns": {
            "cmp_1": {"state": "failed", "reason": "flash write error"},
            "cmp_2": {"state": "timed-out"},
            "cmp_3": null,
            "cmp_4": {"state": "installing"},
        }, "temp": 4});
        let reports = DeviceReport::from_reported(&device, patch.as_object().unwrap());
        let got: Vec<_> = reports.iter().map(|r| (r.campaign.as_str(), r.state, r.reason.as_deref())).collect();
        assert_eq!(
            got,
            vec![("cmp_1", DeviceState::Failed, Some("flash write error")), ("cmp_4", DeviceState::Installing, None)]
        );
        assert!(DeviceState::RolledBack.is_failure() && !DeviceState::Succeeded.is_failure());
        assert!(DeviceState::Installing.in_flight() && !DeviceState::Pending.in_flight());
        assert_eq!("rolled-back".parse::<DeviceState>(), Ok(DeviceState::RolledBack));
    }
}
