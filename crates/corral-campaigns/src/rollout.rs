//! [`Rollouts`]: campaigns as the platform runs them. One task follows every open campaign: it
//! hears the devices' reports (their reported twins), times out devices that went quiet, stops a
//! campaign at its thresholds, and notifies the next devices of the current wave up to the
//! concurrency cap and the plan's pace (`max_per_minute`), inside the maintenance window.
//!
//! Durability without a write per report: a device's report is durable in its twin before the
//! rollout hears it, and notifying a device is a tracked command with an idempotency key
//! (`campaign:<id>:<device>`). So the rollout writes its own rows in one transaction per round,
//! and after a `kill -9` it reads the twins of the devices it was following again and re-issues
//! notifications it had not recorded — which the command ledger answers with the command issued
//! before, sending nothing twice.

use crate::CampaignError;
use crate::artifact::{Artifact, Artifacts};
use crate::book::{CampaignBook, WaveCount};
use crate::fleet::{Fleet, satisfies};
use crate::metrics::RolloutMetrics;
use crate::model::{Campaign, CampaignDevice, CampaignState, DeviceReport, DeviceState, NewCampaign, Rollout, new_campaign_id};
use corral_model::{DeviceId, WireError};
use corral_services::{Clock, CommandOrder, IssueCommands, ReportedNotice};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::{Mutex, Notify, broadcast};

/// The most devices one campaign may address.
pub const MAX_CAMPAIGN_DEVICES: usize = 100_000;
/// The command a firmware campaign sends each device.
pub const FIRMWARE_COMMAND: &str = "firmware.update";
/// How often the rollout looks at its campaigns when nothing wakes it (time-outs, windows).
const TICK: Duration = Duration::from_millis(200);
/// How often a dynamic campaign selects its target again.
const RESELECT_MS: i64 = 30_000;
/// How many failure reasons a campaign's progress shows.
const TOP_REASONS: usize = 10;

/// An operator's action on a campaign (parsed with [`FromStr`](std::str::FromStr); the schema
/// names the words the API takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, schemars::JsonSchema)]
#[schemars(rename = "CampaignAction", rename_all = "lowercase")]
pub enum Action {
    /// Starts a draft campaign (created with `"start": false`).
    Start,
    /// Pauses a running campaign: no device is notified; reports are still recorded.
    Pause,
    /// Resumes a paused campaign.
    Resume,
    /// Cancels a draft, running or paused campaign for good.
    Cancel,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = CampaignError;
    fn from_str(s: &str) -> Result<Self, CampaignError> {
        match s {
            "start" => Ok(Action::Start),
            "pause" => Ok(Action::Pause),
            "resume" => Ok(Action::Resume),
            "cancel" => Ok(Action::Cancel),
            other => Err(CampaignError::bad(format!("no action {other:?}: start, pause, resume or cancel"))),
        }
    }
}

/// A campaign's progress: per wave and in all, and why devices failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub campaign: Campaign,
    pub counts: Vec<WaveCount>,
    pub reasons: Vec<(String, u64)>,
}

/// One open campaign as the rollout follows it.
struct Live {
    campaign: Campaign,
    /// In notification order.
    devices: Vec<CampaignDevice>,
    index: HashMap<DeviceId, usize>,
    /// Devices changed since the last write.
    dirty: BTreeSet<usize>,
    campaign_dirty: bool,
    /// The firmware campaign's artifact.
    artifact: Option<Artifact>,
    selected_at_ms: i64,
    /// Notifications `plan.max_per_minute` allows now, and when they were counted.
    pace: Pace,
}

/// A token bucket for `plan.max_per_minute`: it fills at the plan's rate, up to one second's
/// worth, so notifications come a few per round rather than a minute's worth at once. In memory:
/// after a restart the campaign starts again with one second's worth.
#[derive(Debug, Clone, Copy)]
struct Pace {
    tokens: f64,
    at_ms: i64,
}

impl Pace {
    fn capacity(per_minute: u64) -> f64 {
        (per_minute as f64 / 60.0).max(1.0)
    }

    /// How many devices may be notified at `now_ms` (`usize::MAX` without a limit).
    fn allowance(&mut self, per_minute: Option<u64>, now_ms: i64) -> usize {
        let Some(per_minute) = per_minute else { return usize::MAX };
        let elapsed = (now_ms - self.at_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * per_minute as f64 / 60_000.0).min(Pace::capacity(per_minute));
        self.at_ms = now_ms;
        self.tokens.floor() as usize
    }

    fn spend(&mut self, devices: usize) {
        self.tokens = (self.tokens - devices as f64).max(0.0);
    }
}

impl Live {
    fn new(campaign: Campaign, devices: Vec<CampaignDevice>, artifact: Option<Artifact>, now_ms: i64) -> Live {
        let index = devices.iter().enumerate().map(|(i, d)| (d.device.clone(), i)).collect();
        let pace = Pace { tokens: campaign.plan.max_per_minute.map_or(0.0, Pace::capacity), at_ms: now_ms };
        Live { campaign, devices, index, dirty: BTreeSet::new(), campaign_dirty: false, artifact, selected_at_ms: now_ms, pace }
    }

    fn set_state(&mut self, state: CampaignState, reason: Option<String>, now_ms: i64) {
        self.campaign.state = state;
        if reason.is_some() {
            self.campaign.reason = reason;
        }
        if state == CampaignState::Running {
            self.campaign.started_at_ms.get_or_insert(now_ms);
        }
        if state.is_final() {
            self.campaign.finished_at_ms = Some(now_ms);
        }
        self.campaign_dirty = true;
    }

    fn move_device(&mut self, i: usize, state: DeviceState, reason: Option<String>, now_ms: i64) {
        let device = &mut self.devices[i];
        device.state = state;
        if state.is_failure() {
            device.reason = reason;
        }
        device.notified_at_ms.get_or_insert(now_ms);
        device.updated_at_ms = now_ms;
        self.dirty.insert(i);
    }

    /// Per wave: (devices, final, succeeded, failed).
    fn waves(&self) -> Vec<(u64, u64, u64, u64)> {
        let mut waves = vec![(0, 0, 0, 0); self.campaign.plan.waves.len().max(1)];
        for d in &self.devices {
            let w = &mut waves[(d.wave as usize).min(self.campaign.plan.waves.len().max(1) - 1)];
            w.0 += 1;
            w.1 += u64::from(d.state.is_final());
            w.2 += u64::from(d.state == DeviceState::Succeeded);
            w.3 += u64::from(d.state.is_failure());
        }
        waves
    }

    /// Why the campaign must stop now, if it must.
    fn abort_reason(&self, waves: &[(u64, u64, u64, u64)], current: usize) -> Option<String> {
        let plan = &self.campaign.plan;
        for (w, &(size, done, succeeded, failed)) in waves.iter().enumerate().take(current + 1) {
            let n = w + 1;
            if let Some(max) = plan.abort.failures
                && failed >= max
                && failed > 0
            {
                return Some(format!("wave {n}: {failed} devices failed (the limit is {max})"));
            }
            if let Some(ratio) = plan.abort.failure_ratio
                && size > 0
                && failed as f64 / size as f64 > ratio
            {
                return Some(format!("wave {n}: {failed} of {size} devices failed (more than {:.0} %)", ratio * 100.0));
            }
            if w < current && size > 0 && done == size && (succeeded as f64 / size as f64) < plan.min_success_ratio {
                return Some(format!(
                    "wave {n}: {succeeded} of {size} devices succeeded, below the minimum of {:.0} %",
                    plan.min_success_ratio * 100.0
                ));
            }
        }
        None
    }
}

/// The rollout of every campaign. Clone it freely: clones share everything.
#[derive(Clone)]
pub struct Rollouts {
    inner: Arc<Inner>,
}

struct Inner {
    book: Arc<dyn CampaignBook>,
    artifacts: Arc<Artifacts>,
    issuer: Arc<dyn IssueCommands>,
    fleet: Arc<dyn Fleet>,
    clock: Arc<dyn Clock>,
    live: Mutex<HashMap<String, Live>>,
    /// Reports heard since the last round (taken by the next one).
    reports: Mutex<Option<broadcast::Receiver<ReportedNotice>>>,
    wake: Notify,
    metrics: Arc<RolloutMetrics>,
}

impl Rollouts {
    pub fn new(
        book: Arc<dyn CampaignBook>,
        artifacts: Arc<Artifacts>,
        issuer: Arc<dyn IssueCommands>,
        fleet: Arc<dyn Fleet>,
        clock: Arc<dyn Clock>,
    ) -> Rollouts {
        Rollouts {
            inner: Arc::new(Inner {
                book,
                artifacts,
                issuer,
                fleet,
                clock,
                live: Mutex::new(HashMap::new()),
                reports: Mutex::new(None),
                wake: Notify::new(),
                metrics: Arc::new(RolloutMetrics::default()),
            }),
        }
    }

    pub fn artifacts(&self) -> &Arc<Artifacts> {
        &self.inner.artifacts
    }

    pub fn metrics(&self) -> Arc<RolloutMetrics> {
        self.inner.metrics.clone()
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Loads the open campaigns, catches up with what their devices reported while the rollout
    /// was not listening, and (with `run`) starts the task that follows them. Tests leave `run`
    /// off and call [`Rollouts::round`] on a manual clock.
    pub async fn start(&self, run: bool) -> Result<(), CampaignError> {
        // Listen first, then load: a report between the two is heard, not missed.
        *self.inner.reports.lock().await = Some(self.inner.fleet.reported_changes());
        let now = self.now_ms();
        let mut live = self.inner.live.lock().await;
        for campaign in self.inner.book.open_campaigns().await? {
            let devices = self.inner.book.devices(&campaign.id).await?;
            let artifact = self.artifact_of(&campaign).await?;
            let id = campaign.id.clone();
            let mut follow = Live::new(campaign, devices, artifact, now);
            self.catch_up(&mut follow).await;
            tracing::info!(campaign = %id, state = %follow.campaign.state, devices = follow.devices.len(), "following campaign");
            live.insert(id, follow);
        }
        drop(live);
        if run {
            let rollouts = self.clone();
            tokio::spawn(async move { rollouts.run().await });
        }
        Ok(())
    }

    async fn artifact_of(&self, campaign: &Campaign) -> Result<Option<Artifact>, CampaignError> {
        match &campaign.rollout {
            Rollout::Firmware { artifact, .. } => {
                Ok(Some(self.inner.artifacts.get(artifact, Some(campaign.tenant.as_str())).await?))
            }
            Rollout::Configuration { .. } => Ok(None),
        }
    }

    async fn run(&self) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.inner.wake.notified() => {}
            }
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "campaign round failed; trying again shortly");
            }
        }
    }

    /// One round: the reports heard since the last one, then each campaign's next steps, then
    /// one write of everything that changed.
    pub async fn round(&self) -> Result<(), CampaignError> {
        let (notices, lagged) = self.take_reports().await;
        let now = self.now_ms();
        let mut live = self.inner.live.lock().await;
        for follow in live.values_mut() {
            if lagged {
                self.catch_up(follow).await;
            }
        }
        for notice in &notices {
            for follow in live.values_mut() {
                self.heard(follow, notice, now).await;
            }
        }
        let mut result = Ok(());
        for follow in live.values_mut() {
            if let Err(e) = self.step(follow, now).await {
                tracing::warn!(campaign = %follow.campaign.id, error = %e, "campaign step failed");
            }
            if let Err(e) = self.save(follow).await {
                result = Err(e);
            }
        }
        // A final campaign with nobody left to hear from is done with.
        live.retain(|_, f| {
            !(f.campaign.state.is_final() && f.dirty.is_empty() && !f.devices.iter().any(|d| d.state.in_flight()))
        });
        self.inner.metrics.observe(live.values().map(|f| (&f.campaign, f.devices.as_slice())));
        result
    }

    async fn take_reports(&self) -> (Vec<ReportedNotice>, bool) {
        let mut guard = self.inner.reports.lock().await;
        let Some(receiver) = guard.as_mut() else { return (Vec::new(), false) };
        let (mut notices, mut lagged) = (Vec::new(), false);
        loop {
            match receiver.try_recv() {
                Ok(notice) => notices.push(notice),
                Err(TryRecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "device reports came faster than campaigns followed them; reading the twins again"
                    );
                    lagged = true;
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => return (notices, lagged),
            }
        }
    }

    /// Writes what changed in `follow`; on failure it stays marked and goes out next round.
    /// Devices first: the campaign's state follows from theirs, so nobody reads a campaign
    /// `completed` while its devices still show the states they had before the round (and a
    /// crash between the two leaves a campaign that the next start completes again).
    async fn save(&self, follow: &mut Live) -> Result<(), CampaignError> {
        if !follow.dirty.is_empty() {
            let changed: Vec<CampaignDevice> = follow.dirty.iter().map(|&i| follow.devices[i].clone()).collect();
            self.inner.book.save_devices(&changed).await?;
            follow.dirty.clear();
        }
        if follow.campaign_dirty {
            self.inner.book.save_campaign(&follow.campaign).await?;
            follow.campaign_dirty = false;
        }
        Ok(())
    }

    /// Reads the twins of every device not final yet and applies what they report: after a
    /// restart, or when reports came too fast to follow one by one.
    async fn catch_up(&self, follow: &mut Live) {
        let now = self.now_ms();
        let open: Vec<usize> = (0..follow.devices.len()).filter(|&i| !follow.devices[i].state.is_final()).collect();
        for i in open {
            let device = follow.devices[i].device.clone();
            match self.inner.fleet.reported(&device).await {
                Ok(reported) => {
                    for report in DeviceReport::from_reported(&device, &reported) {
                        self.apply(follow, report, now).await;
                    }
                    self.check_configured(follow, i, &reported, now).await;
                }
                Err(e) => tracing::debug!(%device, error = %e, "reported twin not read"),
            }
        }
    }

    /// A reported change of some device: its campaign reports, and for a configuration
    /// campaign whether it now holds the configuration.
    async fn heard(&self, follow: &mut Live, notice: &ReportedNotice, now: i64) {
        let Some(&i) = follow.index.get(&notice.device) else { return };
        self.inner.metrics.reports.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for report in DeviceReport::from_reported(&notice.device, &notice.patch) {
            self.apply(follow, report, now).await;
        }
        if let Rollout::Configuration { desired } = &follow.campaign.rollout
            && follow.devices[i].state.in_flight()
            && notice.patch.keys().any(|k| desired.contains_key(k))
        {
            match self.inner.fleet.reported(&notice.device).await {
                Ok(reported) => self.check_configured(follow, i, &reported, now).await,
                Err(e) => tracing::debug!(device = %notice.device, error = %e, "reported twin not read"),
            }
        }
    }

    async fn check_configured(
        &self,
        follow: &mut Live,
        i: usize,
        reported: &serde_json::Map<String, serde_json::Value>,
        now: i64,
    ) {
        if let Rollout::Configuration { desired } = &follow.campaign.rollout
            && follow.devices[i].state.in_flight()
            && satisfies(reported, desired)
        {
            follow.move_device(i, DeviceState::Succeeded, None, now);
            self.inner.metrics.moved(DeviceState::Succeeded);
        }
    }

    /// A device's own report: forward only, and never past a final state.
    async fn apply(&self, follow: &mut Live, report: DeviceReport, now: i64) {
        if report.campaign != follow.campaign.id {
            return;
        }
        let Some(&i) = follow.index.get(&report.device) else { return };
        let current = follow.devices[i].state;
        if current.is_final() || report.state <= current {
            return;
        }
        tracing::debug!(campaign = %report.campaign, device = %report.device, state = %report.state, "campaign device reported");
        follow.move_device(i, report.state, report.reason, now);
        self.inner.metrics.moved(report.state);
        if report.state == DeviceState::Succeeded
            && let Rollout::Firmware { version, .. } = &follow.campaign.rollout
            && let Err(e) = self.inner.fleet.installed(&report.device, version).await
        {
            tracing::warn!(device = %report.device, error = %e, "installed firmware version not recorded");
        }
    }

    /// The campaign's next steps at `now`.
    async fn step(&self, follow: &mut Live, now: i64) -> Result<(), CampaignError> {
        let timeout_ms = i64::try_from(follow.campaign.plan.device_timeout_s).unwrap_or(i64::MAX / 1000) * 1000;
        for i in 0..follow.devices.len() {
            let d = &follow.devices[i];
            if d.state.in_flight() && d.notified_at_ms.is_some_and(|at| now >= at.saturating_add(timeout_ms)) {
                let reason = format!("no final report within {} s", follow.campaign.plan.device_timeout_s);
                follow.move_device(i, DeviceState::TimedOut, Some(reason), now);
                self.inner.metrics.moved(DeviceState::TimedOut);
            }
        }
        if follow.campaign.state != CampaignState::Running {
            return Ok(());
        }
        if follow.campaign.dynamic && now - follow.selected_at_ms >= RESELECT_MS {
            self.reselect(follow, now).await?;
        }
        let waves = follow.waves();
        let current = waves.iter().position(|&(size, done, _, _)| done < size);
        if let Some(reason) = follow.abort_reason(&waves, current.unwrap_or(waves.len() - 1)) {
            tracing::warn!(campaign = %follow.campaign.id, %reason, "campaign aborted");
            follow.set_state(CampaignState::Aborted, Some(reason), now);
            return Ok(());
        }
        let Some(current) = current else {
            if !follow.campaign.dynamic {
                tracing::info!(campaign = %follow.campaign.id, devices = follow.devices.len(), "campaign completed");
                follow.set_state(CampaignState::Completed, None, now);
            }
            return Ok(());
        };
        if follow.campaign.plan.window.as_ref().is_some_and(|w| !w.contains(now)) {
            return Ok(());
        }
        let in_flight = follow.devices.iter().filter(|d| d.state.in_flight()).count() as u64;
        let budget = usize::try_from(follow.campaign.plan.concurrency.saturating_sub(in_flight)).unwrap_or(usize::MAX);
        let budget = budget.min(follow.pace.allowance(follow.campaign.plan.max_per_minute, now));
        let next: Vec<usize> = (0..follow.devices.len())
            .filter(|&i| follow.devices[i].wave as usize == current && follow.devices[i].state == DeviceState::Pending)
            .take(budget)
            .collect();
        for i in next {
            if let Err(e) = self.notify(follow, i, now).await {
                // The ledger or the twins are busy: this device and the rest wait for the next round.
                tracing::warn!(campaign = %follow.campaign.id, device = %follow.devices[i].device, error = %e, "device not notified yet");
                break;
            }
            follow.pace.spend(1);
        }
        Ok(())
    }

    /// Tells device `i` about the campaign.
    async fn notify(&self, follow: &mut Live, i: usize, now: i64) -> Result<(), WireError> {
        let campaign = &follow.campaign;
        let device = follow.devices[i].clone();
        let timeout = Duration::from_secs(campaign.plan.device_timeout_s);
        match (&campaign.rollout, &follow.artifact) {
            (Rollout::Firmware { .. }, Some(artifact)) => {
                let expires = now.saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
                let payload = json!({
                    "campaign": campaign.id,
                    "artifact": artifact.manifest(),
                    "url": self.inner.artifacts.download_url(&artifact.id, &device.device, expires),
                    "coap": format!("devices/{}/artifacts/{}", device.device, artifact.id),
                });
                let order = CommandOrder {
                    device: device.device.clone(),
                    tenant: device.tenant.clone(),
                    name: FIRMWARE_COMMAND.to_string(),
                    payload,
                    timeout,
                    created_by: format!("campaign:{}", campaign.id),
                    key: Some(format!("campaign:{}:{}", campaign.id, device.device)),
                };
                let command = self.inner.issuer.issue(order).await?;
                follow.devices[i].command = Some(command);
            }
            (Rollout::Configuration { desired }, _) => {
                if let Err(e) = self.inner.fleet.configure(&device.device, &device.tenant, desired).await {
                    if e.kind != corral_model::ErrorKind::NotFound {
                        return Err(e);
                    }
                    follow.move_device(i, DeviceState::Failed, Some("the device no longer exists".into()), now);
                    self.inner.metrics.moved(DeviceState::Failed);
                    return Ok(());
                }
            }
            (Rollout::Firmware { .. }, None) => return Err(WireError::internal("a firmware campaign without its artifact")),
        }
        follow.move_device(i, DeviceState::Notified, None, now);
        self.inner.metrics.moved(DeviceState::Notified);
        tracing::debug!(campaign = %follow.campaign.id, device = %device.device, wave = device.wave + 1, "device notified");
        if let Rollout::Configuration { .. } = &follow.campaign.rollout
            && let Ok(reported) = self.inner.fleet.reported(&device.device).await
        {
            // Already configured so (a device that applied it before, a retry): done.
            self.check_configured(follow, i, &reported, now).await;
        }
        Ok(())
    }

    /// A dynamic campaign's target again: devices that joined it go into the last wave.
    async fn reselect(&self, follow: &mut Live, now: i64) -> Result<(), CampaignError> {
        follow.selected_at_ms = now;
        let campaign = &follow.campaign;
        let selected = self.inner.fleet.select(&campaign.tenant, &campaign.target, MAX_CAMPAIGN_DEVICES).await?;
        let last_wave = u32::try_from(campaign.plan.waves.len().saturating_sub(1)).unwrap_or(0);
        let next = follow.devices.iter().map(|d| d.position + 1).max().unwrap_or(0);
        let newcomers = selected.into_iter().filter(|(d, _)| !follow.index.contains_key(d));
        let joined: Vec<CampaignDevice> = (next..)
            .zip(newcomers)
            .map(|(position, (device, tenant))| CampaignDevice::pending(&campaign.id, device, tenant, last_wave, position, now))
            .collect();
        if joined.is_empty() {
            return Ok(());
        }
        self.inner.book.add_devices(&joined).await?;
        tracing::info!(campaign = %campaign.id, joined = joined.len(), "devices joined the campaign's target");
        for device in joined {
            follow.index.insert(device.device.clone(), follow.devices.len());
            follow.devices.push(device);
        }
        Ok(())
    }

    /// Creates a campaign over the devices its target selects now (durable when it returns) and,
    /// unless it is a draft, starts it.
    pub async fn create(&self, new: NewCampaign) -> Result<Campaign, CampaignError> {
        new.plan.check().map_err(CampaignError::BadInput)?;
        if new.name.trim().is_empty() || new.name.chars().count() > 200 {
            return Err(CampaignError::bad("name: 1 to 200 characters"));
        }
        let now = self.now_ms();
        let id = new_campaign_id();
        let mut campaign = Campaign {
            id: id.clone(),
            tenant: new.tenant.clone(),
            name: new.name,
            rollout: new.rollout,
            target: new.target,
            dynamic: new.dynamic,
            plan: new.plan,
            state: if new.start { CampaignState::Running } else { CampaignState::Draft },
            reason: None,
            created_by: new.created_by,
            created_at_ms: now,
            started_at_ms: new.start.then_some(now),
            finished_at_ms: None,
        };
        if let Rollout::Configuration { desired } = &campaign.rollout
            && desired.is_empty()
        {
            return Err(CampaignError::bad("configuration.desired: an object with at least one key"));
        }
        let artifact = self.artifact_of(&campaign).await?;
        if let (Rollout::Firmware { version, .. }, Some(artifact)) = (&mut campaign.rollout, &artifact) {
            version.clone_from(&artifact.version);
        }
        let selected = self.inner.fleet.select(&campaign.tenant, &campaign.target, MAX_CAMPAIGN_DEVICES).await?;
        if selected.is_empty() && !campaign.dynamic {
            return Err(CampaignError::bad("the target selects no device (only active devices are selected)"));
        }
        // A shuffle that does not change between restarts: by a hash of campaign and device.
        let mut ordered: Vec<_> = selected.into_iter().collect();
        ordered.sort_by_cached_key(|(device, _)| Sha256::digest(format!("{id}\n{device}")));
        let ends = campaign.plan.wave_ends(ordered.len());
        let devices: Vec<CampaignDevice> = ordered
            .into_iter()
            .enumerate()
            .map(|(position, (device, tenant))| {
                let wave = ends.iter().position(|&end| position < end).unwrap_or(ends.len() - 1);
                CampaignDevice::pending(&id, device, tenant, u32::try_from(wave).unwrap_or(0), position as u64, now)
            })
            .collect();
        self.inner.book.add_campaign(&campaign, &devices).await?;
        tracing::info!(campaign = %id, devices = devices.len(), state = %campaign.state, by = %campaign.created_by, "campaign created");
        self.inner.live.lock().await.insert(id, Live::new(campaign.clone(), devices, artifact, now));
        self.inner.wake.notify_one();
        Ok(campaign)
    }

    /// Starts, pauses, resumes or cancels a campaign; returns it as it is after.
    pub async fn act(&self, id: &str, scope: Option<&str>, action: Action, by: &str) -> Result<Campaign, CampaignError> {
        let campaign = self.inner.book.campaign(id, scope).await?;
        let now = self.now_ms();
        let mut live = self.inner.live.lock().await;
        let Some(follow) = live.get_mut(id) else {
            return Err(CampaignError::Conflict(format!("campaign {id} is {}; it cannot change any more", campaign.state)));
        };
        use CampaignState::*;
        let to = match (action, follow.campaign.state) {
            (Action::Start, Draft) | (Action::Resume, Paused) => Running,
            (Action::Pause, Running) => Paused,
            (Action::Cancel, Draft | Running | Paused) => Cancelled,
            (action, state) => {
                return Err(CampaignError::Conflict(format!("campaign {id} is {state}; it cannot {}", action.as_str())));
            }
        };
        let reason = (to == Cancelled).then(|| format!("cancelled by {by}"));
        follow.set_state(to, reason, now);
        self.save(follow).await?;
        tracing::info!(campaign = %id, action = action.as_str(), state = %to, %by, "campaign action");
        let campaign = follow.campaign.clone();
        drop(live);
        self.inner.wake.notify_one();
        Ok(campaign)
    }

    pub async fn get(&self, id: &str, scope: Option<&str>) -> Result<Campaign, CampaignError> {
        self.inner.book.campaign(id, scope).await
    }

    pub async fn list(&self, scope: Option<&str>, after: Option<&str>, limit: usize) -> Result<Vec<Campaign>, CampaignError> {
        self.inner.book.campaigns(scope, after, limit).await
    }

    /// The campaign with its counts per wave and state, and its most frequent failure reasons.
    pub async fn progress(&self, id: &str, scope: Option<&str>) -> Result<Progress, CampaignError> {
        let campaign = self.inner.book.campaign(id, scope).await?;
        let counts = self.inner.book.counts(id).await?;
        let reasons = self.inner.book.failure_reasons(id, TOP_REASONS).await?;
        Ok(Progress { campaign, counts, reasons })
    }

    pub async fn devices(
        &self,
        id: &str,
        scope: Option<&str>,
        state: Option<DeviceState>,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<Vec<CampaignDevice>, CampaignError> {
        self.inner.book.campaign(id, scope).await?;
        self.inner.book.device_page(id, state, after, limit).await
    }
}
