//! The rules on the shared outbox: a `rules.db` from before the move opens with its entries shown
//! as they were, and an alarm's action travels from the alarm commit through the delivery loop
//! to its target. Driven by a clock the test moves; no sleeping.

use async_trait::async_trait;
use corral_rules::{Deliveries, DeviceFacts, Platform, RuleBook, Rules, RulesConfig};
use corral_services::{CommandBus, ManualClock};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const START_NS: i64 = 1_800_000_000_000_000_000;
const START_MS: i64 = START_NS / 1_000_000;

/// One meter. Publishes are reported on a channel; those on `stuck/...` never complete, so an
/// entry aimed there stays in flight and the test reads it undisturbed.
struct Fleet {
    meter: DeviceFacts,
    published: mpsc::UnboundedSender<(String, String)>,
}

#[async_trait]
impl Platform for Fleet {
    async fn device(&self, id: &str) -> Option<DeviceFacts> {
        (id == self.meter.id).then(|| self.meter.clone())
    }
    async fn devices(&self) -> Vec<DeviceFacts> {
        vec![self.meter.clone()]
    }
    async fn publish(&self, topic: &str, _payload: Vec<u8>, tenant: &str) -> Result<(), String> {
        if topic.starts_with("stuck/") {
            std::future::pending::<()>().await;
        }
        let _ = self.published.send((topic.to_string(), tenant.to_string()));
        Ok(())
    }
    fn table_fields(&self, _table: &str) -> Option<Vec<String>> {
        None
    }
}

async fn open(path: &Path, clock: &ManualClock) -> (Rules, mpsc::UnboundedReceiver<(String, String)>) {
    let meter = DeviceFacts { id: "meter-1".into(), tenant: "acme".into(), last_seen_ns: Some(START_NS), ..Default::default() };
    let (published, receiver) = mpsc::unbounded_channel();
    // The task's own absence checks are an hour apart: the test runs them when it wants.
    let config = RulesConfig { absence_check_ms: 3_600_000, ..Default::default() };
    let platform = Arc::new(Fleet { meter, published });
    let commands = commands(clock).await;
    let rules = Rules::open(path, config, platform, commands, Arc::new(clock.clone())).await.unwrap();
    (rules, receiver)
}

fn metrics(rules: &Rules) -> String {
    let mut out = String::new();
    rules.render_metrics(&mut out);
    out
}

/// Writes a version-1 `rules.db` as the release before the shared outbox left it: one cleared
/// alarm of tenant `acme` with three entries, and one entry whose alarm row is missing.
async fn version_1_file(path: &Path) {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(include_str!("fixtures/rules_v1.sql")).execute(&pool).await.unwrap();
    sqlx::raw_sql("PRAGMA user_version = 1").execute(&pool).await.unwrap();
    let at = START_MS - 60_000;
    sqlx::query(
        "INSERT INTO alarms (id, rule_id, rule_name, tenant, device, severity, status, message, count, first_at, last_at,
                             last_values, cleared_by, cleared_at)
         VALUES (5, 3, 'too warm', 'acme', 'meter-1', 'critical', 'cleared', 'too warm', 1, ?1, ?1, '{}', 'alice', ?1)",
    )
    .bind(at * 1_000_000)
    .execute(&pool)
    .await
    .unwrap();
    // The action column as version 1 wrote it: the action spec and the alarm's device.
    sqlx::query(
        r#"INSERT INTO outbox (id, idempotency_key, alarm_id, rule_id, event, action, payload, state, attempts, next_attempt_at,
                              last_error, created_at, delivered_at) VALUES
           (1, 'alarm-5-raised-0', 5, 3, 'raised',
            '{"device":"meter-1","spec":{"type":"webhook","url":"https://ops.example.com/hook","secret":"whsec_1","on":["raised"]}}',
            '{}', 'delivered', 1, ?1, NULL, ?1, ?1 + 25),
           (2, 'alarm-5-cleared-1', 5, 3, 'cleared',
            '{"device":"meter-1","spec":{"type":"mqtt","topic":"stuck/{device}","on":["cleared"]}}',
            '{}', 'dead', 12, ?1, 'broker gone', ?1, NULL),
           (3, 'alarm-5-raised-2', 5, 3, 'raised',
            '{"device":"meter-1","spec":{"type":"nats","url":"nats://127.0.0.1:1","subject":"alarms.{device}","on":["raised"]}}',
            '{}', 'pending', 3, ?2, 'connection refused', ?1, NULL),
           (4, 'alarm-99-raised-0', 99, 3, 'raised',
            '{"device":"meter-1","spec":{"type":"mqtt","topic":"ops/alarms","on":["raised"]}}',
            '{}', 'delivered', 1, ?1, NULL, ?1, ?1)"#,
    )
    .bind(at)
    .bind(START_MS + 3_600_000)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn a_version_1_rules_db_opens_with_its_outbox_entries_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.db");
    version_1_file(&path).await;
    let clock = ManualClock::at(START_NS);
    let (rules, _published) = open(&path, &clock).await;

    let entries = serde_json::to_value(rules.outbox(None, None, 10, None).await.unwrap()).unwrap();
    let entry = |id: i64, key: &str, alarm: i64, event: &str, action: Value, state: &str, attempts: i64| {
        json!({"id": id, "idempotency_key": key, "alarm_id": alarm, "rule_id": 3, "event": event, "action": action,
               "state": state, "attempts": attempts, "next_attempt_at": "2027-01-15T07:59:00.000Z", "last_error": null,
               "created_at": "2027-01-15T07:59:00.000Z", "delivered_at": null})
    };
    let mut expected = vec![
        entry(
            4,
            "alarm-99-raised-0",
            99,
            "raised",
            json!({"type": "mqtt", "topic": "ops/alarms", "on": ["raised"]}),
            "delivered",
            1,
        ),
        entry(
            3,
            "alarm-5-raised-2",
            5,
            "raised",
            json!({"type": "nats", "url": "nats://127.0.0.1:1", "subject": "alarms.{device}", "on": ["raised"]}),
            "pending",
            3,
        ),
        entry(
            2,
            "alarm-5-cleared-1",
            5,
            "cleared",
            json!({"type": "mqtt", "topic": "stuck/{device}", "on": ["cleared"]}),
            "dead",
            12,
        ),
        entry(
            1,
            "alarm-5-raised-0",
            5,
            "raised",
            json!({"type": "webhook", "url": "https://ops.example.com/hook", "secret": "********", "on": ["raised"]}),
            "delivered",
            1,
        ),
    ];
    expected[0]["delivered_at"] = json!("2027-01-15T07:59:00.000Z");
    expected[1]["next_attempt_at"] = json!("2027-01-15T09:00:00.000Z");
    expected[1]["last_error"] = json!("connection refused");
    expected[2]["last_error"] = json!("broker gone");
    expected[3]["delivered_at"] = json!("2027-01-15T07:59:00.025Z");
    assert_eq!(entries, Value::Array(expected));

    let ids = async |state: Option<&str>, tenant: Option<&str>| -> Vec<i64> {
        rules.outbox(state, tenant, 10, None).await.unwrap().iter().map(|e| e.id).collect()
    };
    assert_eq!(ids(None, Some("acme")).await, [3, 2, 1], "the tenant comes from the alarm; an orphan entry is unscoped only");
    assert!(ids(None, Some("globex")).await.is_empty());
    assert_eq!(ids(Some("dead"), None).await, [2]);
    assert!(ids(Some("bogus"), None).await.is_empty());
    assert_eq!(rules.outbox(None, None, 2, Some(3)).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), [2, 1]);
    assert!(metrics(&rules).contains("\ncorral_outbox_pending 1\n"), "{}", metrics(&rules));

    let not_found = rules.retry_delivery(2, Some("globex")).await.unwrap_err();
    assert_eq!(not_found.to_wire().message, "outbox entry 2 not found");
    let delivered = rules.retry_delivery(1, None).await.unwrap_err();
    assert_eq!(delivered.to_wire().message, "outbox entry 1 was already delivered");
    let revived = rules.retry_delivery(2, Some("acme")).await.unwrap();
    assert_eq!(
        (revived.state.as_str(), revived.attempts, revived.next_attempt_at.as_str()),
        ("pending", 0, "2027-01-15T08:00:00.000Z")
    );
    assert!(metrics(&rules).contains("\ncorral_outbox_pending 2\n"));

    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&pool).await.unwrap();
    assert_eq!(version, 2);
}

/// An entry whose action is not JSON could not be sent before the upgrade and cannot after; it
/// must not stop the file from opening.
#[tokio::test]
async fn a_version_1_file_with_an_unreadable_action_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.db");
    version_1_file(&path).await;
    let pool = sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&path)).await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (id, idempotency_key, alarm_id, rule_id, event, action, payload, state, next_attempt_at, created_at)
         VALUES (9, 'alarm-5-raised-9', 5, 3, 'raised', 'not json', '{}', 'pending', 0, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let (rules, _published) = open(&path, &ManualClock::at(START_NS)).await;
    assert_eq!(rules.outbox(Some("dead"), None, 10, None).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), [2]);
    assert!(metrics(&rules).contains("\ncorral_outbox_pending 2\n"), "the unreadable entry still counts, as before");
}

#[tokio::test]
async fn an_alarms_action_is_committed_with_it_and_delivered_by_the_outbox_loop() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START_NS);
    let (rules, mut published) = open(&dir.path().join("rules.db"), &clock).await;
    let spec = json!({"name": "meter quiet", "absence": "15m", "severity": "major",
                      "actions": [{"type": "mqtt", "topic": "alerts/{tenant}/{device}/{event}"}]});
    let rule = rules.create_rule(serde_json::from_value(spec).unwrap(), "test", None).await.unwrap();

    clock.advance(Duration::from_secs(16 * 60));
    rules.check_absence().await;
    let action = async {
        loop {
            let (topic, tenant) = published.recv().await.expect("platform alive");
            if topic.starts_with("alerts/") {
                return (topic, tenant);
            }
        }
    };
    let sent = tokio::time::timeout(Duration::from_secs(10), action).await.expect("the action is delivered");
    assert_eq!(sent, ("alerts/acme/meter-1/raised".to_string(), "acme".to_string()));

    // The delivery is recorded right after the publish returns.
    let recorded = async {
        loop {
            if let Some(e) = rules.outbox(Some("delivered"), Some("acme"), 10, None).await.unwrap().pop() {
                return e;
            }
            tokio::task::yield_now().await;
        }
    };
    let entry = tokio::time::timeout(Duration::from_secs(10), recorded).await.expect("the delivery is recorded");
    assert_eq!((entry.rule_id, entry.event.as_str(), entry.attempts), (rule.id, "raised", 1));
    assert_eq!(entry.idempotency_key, format!("alarm-{}-raised-0", entry.alarm_id));
    let text = metrics(&rules);
    assert!(text.contains("\ncorral_outbox_delivered_total{action=\"mqtt\"} 1\n"), "{text}");
    assert!(text.contains("\ncorral_outbox_pending 0\n"), "{text}");
}

/// The platform's tracked commands, on a private ledger (no rule here commands a device).
async fn commands(clock: &ManualClock) -> Arc<dyn corral_services::IssueCommands> {
    let ledger = Arc::new(corral_commands::SqliteLedger::open_in_memory().await.unwrap());
    Arc::new(corral_commands::Tracker::new(ledger, Arc::new(CommandBus::default()), Arc::new(clock.clone())))
}
