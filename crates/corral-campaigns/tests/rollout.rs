//! The rollout on a manual clock, over the real twin store, command tracker and campaign book (in
//! memory): waves, thresholds, time-outs, configuration campaigns, and a restart that notifies
//! nobody twice. The doors and the REST API are tested in `crates/corral/tests/campaigns.rs`.

use async_trait::async_trait;
use bytes::Bytes;
use corral_campaigns::model::{AbortRule, WaveSize};
use corral_campaigns::{
    Action, ArtifactCatalog, Artifacts, CampaignBook, CampaignState, DeviceState, Fleet, NewArtifact, NewCampaign, Plan, Rollout,
    Rollouts, SqliteCampaigns,
};
use corral_commands::{CommandFilter, SqliteLedger, Tracker};
use corral_model::{DeviceId, TenantId, WireError};
use corral_registry::Target;
use corral_services::{Clock, CommandBus, ManualClock, ReportedNotice};
use corral_twin::{DesiredTwin, ReportedTwin, SqliteTwins, TwinLifecycle, TwinReader, TwinSettings};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// A fleet of `devices` in the default tenant, over a real twin store.
struct TestFleet {
    devices: Mutex<BTreeMap<DeviceId, TenantId>>,
    twins: SqliteTwins,
    installed: Mutex<Vec<(DeviceId, String)>>,
}

#[async_trait]
impl Fleet for TestFleet {
    async fn select(&self, _: &TenantId, _: &Target, _: usize) -> Result<BTreeMap<DeviceId, TenantId>, WireError> {
        Ok(self.devices.lock().unwrap().clone())
    }
    async fn configure(&self, device: &DeviceId, tenant: &TenantId, desired: &Map<String, Value>) -> Result<(), WireError> {
        self.twins.patch_desired(device, Some(tenant.as_str()), None, desired).await.map(drop).map_err(|e| e.to_wire())
    }
    async fn reported(&self, device: &DeviceId) -> Result<Map<String, Value>, WireError> {
        Ok(self.twins.twin(device, None).await.map_err(|e| e.to_wire())?.reported.document)
    }
    async fn installed(&self, device: &DeviceId, version: &str) -> Result<(), WireError> {
        self.installed.lock().unwrap().push((device.clone(), version.to_string()));
        Ok(())
    }
    fn reported_changes(&self) -> broadcast::Receiver<ReportedNotice> {
        self.twins.reported_changes()
    }
}

struct World {
    clock: Arc<ManualClock>,
    book: SqliteCampaigns,
    ledger: SqliteLedger,
    tracker: Tracker,
    fleet: Arc<TestFleet>,
    artifacts: Arc<Artifacts>,
    _dir: tempfile::TempDir,
}

fn id(n: usize) -> DeviceId {
    DeviceId::new(format!("meter-{n:03}")).unwrap()
}

impl World {
    async fn new(devices: usize) -> World {
        // 2026-01-01 12:00 UTC.
        let clock = Arc::new(ManualClock::at(1_767_268_800 * 1_000_000_000));
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let twins = SqliteTwins::open_in_memory(dyn_clock.clone(), TwinSettings::default()).await.unwrap();
        let mut all = BTreeMap::new();
        for n in 0..devices {
            twins.ensure_twin(&id(n), &TenantId::default_tenant(), None).await.unwrap();
            all.insert(id(n), TenantId::default_tenant());
        }
        let fleet = Arc::new(TestFleet { devices: Mutex::new(all), twins, installed: Mutex::new(Vec::new()) });
        let book = SqliteCampaigns::open_in_memory().await.unwrap();
        let ledger = SqliteLedger::open_in_memory().await.unwrap();
        let tracker = Tracker::new(Arc::new(ledger.clone()), Arc::new(CommandBus::default()), dyn_clock.clone());
        let dir = tempfile::tempdir().unwrap();
        let catalog: Arc<dyn ArtifactCatalog> = Arc::new(book.clone());
        let artifacts = Arc::new(Artifacts::open(dir.path(), catalog, dyn_clock, 1 << 20).await.unwrap());
        World { clock, book, ledger, tracker, fleet, artifacts, _dir: dir }
    }

    /// A rollout over this world, loaded from the book as after a start.
    async fn rollouts(&self) -> Rollouts {
        let book: Arc<dyn CampaignBook> = Arc::new(self.book.clone());
        let rollouts =
            Rollouts::new(book, self.artifacts.clone(), Arc::new(self.tracker.clone()), self.fleet.clone(), self.clock.clone());
        rollouts.start(false).await.unwrap();
        rollouts
    }

    async fn firmware(&self) -> String {
        let new = NewArtifact { name: "meter-fw".into(), version: "2.1.0".into(), ..NewArtifact::default() };
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"firmware image"))]);
        self.artifacts.upload(new, body).await.unwrap().id
    }

    async fn report(&self, n: usize, campaign: &str, state: &str) {
        let patch = json!({"campaigns": {campaign: {"state": state, "reason": format!("{state} on purpose")}}});
        self.fleet.twins.patch_reported(&id(n), patch.as_object().unwrap()).await.unwrap();
    }

    async fn states(&self, campaign: &str) -> Vec<(u32, DeviceState)> {
        self.book.devices(campaign).await.unwrap().iter().map(|d| (d.wave, d.state)).collect()
    }

    async fn count(&self, campaign: &str, wave: u32, state: DeviceState) -> usize {
        self.states(campaign).await.iter().filter(|&&(w, s)| w == wave && s == state).count()
    }

    /// Devices of `campaign` in `state`, by number.
    async fn numbers(&self, campaign: &str, state: DeviceState) -> Vec<usize> {
        let devices = self.book.devices(campaign).await.unwrap();
        devices
            .iter()
            .filter(|d| d.state == state)
            .map(|d| d.device.as_str().trim_start_matches("meter-").parse().unwrap())
            .collect()
    }
}

fn plan(waves: Vec<WaveSize>) -> Plan {
    Plan { waves, concurrency: 100, device_timeout_s: 60, ..Plan::default() }
}

fn firmware_campaign(artifact: &str, plan: Plan) -> NewCampaign {
    NewCampaign {
        tenant: TenantId::default_tenant(),
        name: "spring update".into(),
        rollout: Rollout::Firmware { artifact: artifact.into(), version: String::new() },
        target: Target { profile: Some("meter".into()), ..Target::default() },
        dynamic: false,
        plan,
        start: true,
        created_by: "test".into(),
    }
}

#[tokio::test]
async fn waves_go_one_after_another_and_a_failing_wave_stops_the_campaign() {
    let world = World::new(20).await;
    let rollouts = world.rollouts().await;
    let mut staged = plan(vec![WaveSize::Percent(10.0), WaveSize::Percent(50.0), WaveSize::Percent(100.0)]);
    staged.abort = AbortRule { failure_ratio: Some(0.2), failures: None };
    let campaign = rollouts.create(firmware_campaign(&world.firmware().await, staged)).await.unwrap();
    rollouts.round().await.unwrap();
    // Wave 1 is 10 % of 20: two devices, and nobody else yet.
    assert_eq!(world.count(&campaign.id, 0, DeviceState::Notified).await, 2);
    assert_eq!(world.count(&campaign.id, 1, DeviceState::Pending).await, 8);
    let first = world.numbers(&campaign.id, DeviceState::Notified).await;
    world.report(first[0], &campaign.id, "downloading").await;
    world.report(first[1], &campaign.id, "succeeded").await;
    rollouts.round().await.unwrap();
    assert_eq!(world.count(&campaign.id, 1, DeviceState::Notified).await, 0, "wave 2 waits for every device of wave 1");
    world.report(first[0], &campaign.id, "succeeded").await;
    rollouts.round().await.unwrap();
    rollouts.round().await.unwrap();
    assert_eq!(world.count(&campaign.id, 1, DeviceState::Notified).await, 8, "wave 2 starts once wave 1 is done");
    assert_eq!(world.fleet.installed.lock().unwrap().len(), 2);
    assert_eq!(world.fleet.installed.lock().unwrap()[0].1, "2.1.0");

    // One failure in 8 is 12.5 %: on. Two are 25 %: over the 20 % threshold.
    let second = world.numbers(&campaign.id, DeviceState::Notified).await;
    world.report(second[0], &campaign.id, "failed").await;
    rollouts.round().await.unwrap();
    assert_eq!(rollouts.get(&campaign.id, None).await.unwrap().state, CampaignState::Running);
    world.report(second[1], &campaign.id, "rolled-back").await;
    rollouts.round().await.unwrap();
    let stopped = rollouts.progress(&campaign.id, None).await.unwrap();
    assert_eq!(stopped.campaign.state, CampaignState::Aborted);
    assert!(
        stopped.campaign.reason.as_deref().unwrap().contains("wave 2: 2 of 8 devices failed"),
        "{:?}",
        stopped.campaign.reason
    );
    assert_eq!(stopped.reasons, vec![("failed on purpose".to_string(), 1), ("rolled-back on purpose".to_string(), 1)]);
    // Nobody of wave 3 is ever told, however long it runs.
    world.clock.advance(Duration::from_secs(600));
    rollouts.round().await.unwrap();
    assert_eq!(world.count(&campaign.id, 2, DeviceState::Pending).await, 10);
    let commands = world.ledger_commands().await;
    assert_eq!(commands, 10, "one command per notified device, none for wave 3");
    // The devices that were still at it when the campaign stopped timed out meanwhile.
    assert_eq!(world.count(&campaign.id, 1, DeviceState::TimedOut).await, 6);
}

impl World {
    async fn ledger_commands(&self) -> usize {
        use corral_commands::CommandLedger;
        let filter = CommandFilter { limit: 1000, ..CommandFilter::default() };
        self.ledger.list(&filter, None).await.unwrap().len()
    }
}

#[tokio::test]
async fn the_concurrency_cap_the_window_and_pause_hold_back_notifications() {
    let world = World::new(10).await;
    let rollouts = world.rollouts().await;
    let mut capped = plan(vec![WaveSize::Percent(100.0)]);
    capped.concurrency = 3;
    let campaign = rollouts.create(firmware_campaign(&world.firmware().await, capped)).await.unwrap();
    rollouts.round().await.unwrap();
    assert_eq!(world.numbers(&campaign.id, DeviceState::Notified).await.len(), 3);
    let notified = world.numbers(&campaign.id, DeviceState::Notified).await;
    world.report(notified[0], &campaign.id, "succeeded").await;
    rollouts.act(&campaign.id, None, Action::Pause, "ops").await.unwrap();
    rollouts.round().await.unwrap();
    assert_eq!(world.numbers(&campaign.id, DeviceState::Notified).await.len(), 2, "paused: nobody new");
    rollouts.act(&campaign.id, None, Action::Resume, "ops").await.unwrap();
    rollouts.round().await.unwrap();
    assert_eq!(world.numbers(&campaign.id, DeviceState::Notified).await.len(), 3, "one done, one more told");
    rollouts.act(&campaign.id, None, Action::Cancel, "ops").await.unwrap();
    let resumed = rollouts.act(&campaign.id, None, Action::Resume, "ops").await;
    assert!(matches!(resumed, Err(corral_campaigns::CampaignError::Conflict(_))), "{resumed:?}");
    assert_eq!(rollouts.get(&campaign.id, None).await.unwrap().reason.as_deref(), Some("cancelled by ops"));

    // A window that is closed now (the clock is at 12:00 UTC) notifies nobody.
    let mut night_plan = plan(vec![WaveSize::Percent(100.0)]);
    night_plan.window = Some(corral_campaigns::model::Window { start: "22:00".into(), end: "04:00".into() });
    let night = rollouts.create(firmware_campaign(&world.firmware_named("2.2.0").await, night_plan)).await.unwrap();
    rollouts.round().await.unwrap();
    assert_eq!(world.numbers(&night.id, DeviceState::Notified).await.len(), 0);
    world.clock.advance(Duration::from_secs(11 * 3600));
    rollouts.round().await.unwrap();
    assert_eq!(world.numbers(&night.id, DeviceState::Notified).await.len(), 10, "23:00 is inside the window");
}

#[tokio::test]
async fn a_paced_campaign_notifies_no_faster_than_its_plan_allows() {
    let world = World::new(10).await;
    let rollouts = world.rollouts().await;
    let mut paced = plan(vec![WaveSize::Percent(100.0)]);
    paced.max_per_minute = Some(120);
    paced.device_timeout_s = 3600;
    let campaign = rollouts.create(firmware_campaign(&world.firmware().await, paced)).await.unwrap();
    let told = || async { world.numbers(&campaign.id, DeviceState::Notified).await.len() };
    rollouts.round().await.unwrap();
    assert_eq!(told().await, 2, "one second's worth (2 of 120 a minute) at the start, not the concurrency cap's 100");
    rollouts.round().await.unwrap();
    assert_eq!(told().await, 2, "no time passed: nobody new");
    world.clock.advance(Duration::from_millis(1000));
    rollouts.round().await.unwrap();
    assert_eq!(told().await, 4, "two more a second later");
    world.clock.advance(Duration::from_millis(500));
    rollouts.round().await.unwrap();
    assert_eq!(told().await, 5, "one more half a second later");
    world.clock.advance(Duration::from_secs(60));
    rollouts.round().await.unwrap();
    assert_eq!(told().await, 7, "a long gap saves up one second's worth, not a minute's");

    let mut bad = plan(vec![WaveSize::Percent(100.0)]);
    bad.max_per_minute = Some(0);
    let refused = rollouts.create(firmware_campaign(&world.firmware_named("2.3.0").await, bad)).await;
    assert!(matches!(refused, Err(corral_campaigns::CampaignError::BadInput(_))), "{refused:?}");
}

impl World {
    async fn firmware_named(&self, version: &str) -> String {
        let new = NewArtifact { name: "meter-fw".into(), version: version.into(), ..NewArtifact::default() };
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(format!("image {version}")))]);
        self.artifacts.upload(new, body).await.unwrap().id
    }
}

#[tokio::test]
async fn after_a_restart_reports_made_meanwhile_count_and_nobody_is_told_twice() {
    let world = World::new(6).await;
    let rollouts = world.rollouts().await;
    let campaign =
        rollouts.create(firmware_campaign(&world.firmware().await, plan(vec![WaveSize::Percent(100.0)]))).await.unwrap();
    rollouts.round().await.unwrap();
    let told = world.numbers(&campaign.id, DeviceState::Notified).await;
    assert_eq!(told.len(), 6);
    drop(rollouts);

    // While no rollout runs, devices report (their twins keep it).
    world.report(told[0], &campaign.id, "succeeded").await;
    world.report(told[1], &campaign.id, "failed").await;
    // A restart that lost the rollout's last write: two devices look pending again.
    let mut rows = world.book.devices(&campaign.id).await.unwrap();
    for row in rows.iter_mut().filter(|d| [told[4], told[5]].contains(&d.device.as_str()[6..].parse().unwrap())) {
        row.state = DeviceState::Pending;
        row.command = None;
        row.notified_at_ms = None;
    }
    world.book.save_devices(&rows).await.unwrap();

    let rollouts = world.rollouts().await;
    rollouts.round().await.unwrap();
    let progress = rollouts.progress(&campaign.id, None).await.unwrap();
    let states: BTreeMap<_, _> = progress.counts.iter().map(|c| (c.state, c.devices)).collect();
    assert_eq!(states, BTreeMap::from([(DeviceState::Notified, 4), (DeviceState::Succeeded, 1), (DeviceState::Failed, 1)]));
    assert_eq!(world.ledger_commands().await, 6, "re-notifying returns the command issued before");
    let commands: Vec<_> = world.book.devices(&campaign.id).await.unwrap().into_iter().filter_map(|d| d.command).collect();
    assert_eq!(commands.len(), 6);
}

#[tokio::test]
async fn a_configuration_campaign_succeeds_when_the_device_reports_the_desired_values() {
    let world = World::new(3).await;
    let rollouts = world.rollouts().await;
    let desired = json!({"interval_s": 30, "net": {"apn": "iot"}}).as_object().unwrap().clone();
    let new = NewCampaign {
        rollout: Rollout::Configuration { desired },
        ..firmware_campaign("", plan(vec![WaveSize::Count(1), WaveSize::Percent(100.0)]))
    };
    let campaign = rollouts.create(new).await.unwrap();
    rollouts.round().await.unwrap();
    let first = world.numbers(&campaign.id, DeviceState::Notified).await;
    assert_eq!(first.len(), 1);
    let twin = world.fleet.twins.twin(&id(first[0]), None).await.unwrap();
    assert_eq!(Value::Object(twin.desired.document.clone()), json!({"interval_s": 30, "net": {"apn": "iot"}}));
    let half = json!({"interval_s": 30});
    world.fleet.twins.patch_reported(&id(first[0]), half.as_object().unwrap()).await.unwrap();
    rollouts.round().await.unwrap();
    assert_eq!(world.numbers(&campaign.id, DeviceState::Notified).await, first, "half the configuration is not done");
    let rest = json!({"net": {"apn": "iot", "roaming": false}});
    world.fleet.twins.patch_reported(&id(first[0]), rest.as_object().unwrap()).await.unwrap();
    rollouts.round().await.unwrap();
    rollouts.round().await.unwrap();
    assert_eq!(world.numbers(&campaign.id, DeviceState::Succeeded).await, first);
    assert_eq!(world.numbers(&campaign.id, DeviceState::Notified).await.len(), 2, "wave 2 follows");
    assert!(world.fleet.installed.lock().unwrap().is_empty(), "no firmware version for a configuration");
}

#[tokio::test]
async fn a_dynamic_campaign_takes_in_devices_that_join_its_target() {
    let world = World::new(2).await;
    let rollouts = world.rollouts().await;
    let new = NewCampaign { dynamic: true, ..firmware_campaign(&world.firmware().await, plan(vec![WaveSize::Percent(100.0)])) };
    let campaign = rollouts.create(new).await.unwrap();
    rollouts.round().await.unwrap();
    for n in world.numbers(&campaign.id, DeviceState::Notified).await {
        world.report(n, &campaign.id, "succeeded").await;
    }
    rollouts.round().await.unwrap();
    assert_eq!(world.numbers(&campaign.id, DeviceState::Succeeded).await.len(), 2);
    assert_eq!(rollouts.get(&campaign.id, None).await.unwrap().state, CampaignState::Running, "it keeps following its target");

    // A new truck is registered in the fleet; the next selection (every 30 s) takes it in.
    world.fleet.twins.ensure_twin(&id(7), &TenantId::default_tenant(), None).await.unwrap();
    world.fleet.devices.lock().unwrap().insert(id(7), TenantId::default_tenant());
    world.clock.advance(Duration::from_secs(31));
    rollouts.round().await.unwrap();
    rollouts.round().await.unwrap();
    assert_eq!(world.numbers(&campaign.id, DeviceState::Notified).await, vec![7]);
}
