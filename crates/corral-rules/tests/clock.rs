//! Rules whose behaviour depends on time, driven by a clock the test moves: no sleeping, and the
//! answer does not depend on how fast the machine is.

use async_trait::async_trait;
use corral_rules::{AlarmBoard, AlarmFilter, DeviceFacts, Platform, RuleBook, Rules, RulesConfig};
use corral_services::{CommandBus, ManualClock};
use std::sync::Arc;
use std::time::Duration;

/// One meter, last heard from when the test starts.
struct Fleet(Vec<DeviceFacts>);

#[async_trait]
impl Platform for Fleet {
    async fn device(&self, id: &str) -> Option<DeviceFacts> {
        self.0.iter().find(|f| f.id == id).cloned()
    }
    async fn devices(&self) -> Vec<DeviceFacts> {
        self.0.clone()
    }
    async fn publish(&self, _topic: &str, _payload: Vec<u8>, _tenant: &str) -> Result<(), String> {
        Ok(())
    }
    fn table_fields(&self, _table: &str) -> Option<Vec<String>> {
        None
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_absence_alarm_is_raised_once_the_clock_passes_the_window_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let start_ns = 1_800_000_000_000_000_000;
    let clock = ManualClock::at(start_ns);
    let meter =
        DeviceFacts { id: "meter-1".into(), tenant: "default".into(), last_seen_ns: Some(start_ns), ..Default::default() };
    // The task's own checks are an hour apart: the test runs them when it wants.
    let config = RulesConfig { absence_check_ms: 3_600_000, ..Default::default() };
    let rules = Rules::open(
        &dir.path().join("rules.db"),
        config,
        Arc::new(Fleet(vec![meter])),
        commands(&clock).await,
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let spec = serde_json::from_value(serde_json::json!({"name": "meter quiet", "absence": "15m", "severity": "major"})).unwrap();
    rules.create_rule(spec, "test", None).await.unwrap();
    let open = async || rules.alarms(&AlarmFilter { open: true, limit: 10, ..Default::default() }).await.unwrap();

    clock.advance(14 * MINUTE);
    rules.check_absence().await;
    assert!(open().await.is_empty(), "14 minutes of silence is inside a 15-minute window");

    clock.advance(2 * MINUTE);
    rules.check_absence().await;
    let alarms = open().await;
    assert_eq!(alarms.iter().map(|a| a.device.as_str()).collect::<Vec<_>>(), ["meter-1"]);
    assert_eq!(alarms[0].first_at, start_ns + (16 * MINUTE).as_nanos() as i64, "raised at the clock's time, not the machine's");
}

/// The platform's tracked commands, on a private ledger (no rule here commands a device).
async fn commands(clock: &ManualClock) -> Arc<dyn corral_services::IssueCommands> {
    let ledger = Arc::new(corral_commands::SqliteLedger::open_in_memory().await.unwrap());
    Arc::new(corral_commands::Tracker::new(ledger, Arc::new(CommandBus::default()), Arc::new(clock.clone())))
}
