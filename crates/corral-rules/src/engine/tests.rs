//! The engine with injected times: every row carries its own timestamp, nothing sleeps.

use super::*;
use crate::alarm::{Book, Transition};
use crate::spec::AlarmEvent;

const MIN: i64 = 60_000_000_000;

fn rule(id: i64, json: serde_json::Value) -> ActiveRule {
    let spec: RuleSpec = serde_json::from_value(json).unwrap();
    spec.validate(None).unwrap();
    ActiveRule::new(id, spec, &Metrics::default()).unwrap()
}

fn facts(id: &str, profile: &str, cargo: &str) -> (String, Arc<DeviceFacts>) {
    let mut attributes = serde_json::Map::new();
    attributes.insert("cargo".into(), cargo.into());
    (
        id.to_string(),
        Arc::new(DeviceFacts {
            id: id.into(),
            tenant: "default".into(),
            profile: Some(profile.into()),
            attributes,
            ..Default::default()
        }),
    )
}

fn fleet() -> HashMap<String, Arc<DeviceFacts>> {
    [facts("r1", "reefer", "vaccines"), facts("r2", "reefer", "bananas"), facts("t1", "truck", "")].into_iter().collect()
}

fn temp(device: &str, at: i64, t: f64) -> Row {
    Row::new(at, device).field("temperature", FieldValue::Float(t))
}

/// Feeds rows one pass at a time and returns the lifecycle events, as the rules task would.
fn run(engine: &mut Engine, book: &mut Book, passes: &[Vec<Row>]) -> Vec<(AlarmEvent, String, i64)> {
    let facts = fleet();
    let mut events = Vec::new();
    for rows in passes {
        for t in engine.evaluate("telemetry", rows, &facts) {
            if let Some((event, alarm)) = book.apply(t) {
                events.push((event, alarm.device, alarm.count));
            }
        }
    }
    events
}

#[test]
fn fires_and_clears_with_hysteresis() {
    let mut engine = Engine::default();
    engine.upsert(rule(1, serde_json::json!({"name": "warm", "condition": "temperature > 8", "clear": "temperature < 7"})));
    let mut book = Book::new(vec![], 0);
    let events = run(
        &mut engine,
        &mut book,
        &[vec![temp("r1", 0, 9.0), temp("r1", 1, 7.5), temp("r1", 2, 9.5)], vec![temp("r1", 3, 7.2)]],
    );
    assert_eq!(events, vec![(AlarmEvent::Raised, "r1".into(), 1)], "7.5 and 7.2 are inside the hysteresis band");
    assert_eq!(book.open_alarms().next().unwrap().count, 2, "9.5 repeated the open alarm");
    let events = run(&mut engine, &mut book, &[vec![temp("r1", 4, 6.9), temp("r1", 5, 9.1)]]);
    assert_eq!(events, vec![(AlarmEvent::Cleared, "r1".into(), 2), (AlarmEvent::Raised, "r1".into(), 1)]);
}

#[test]
fn without_a_clear_condition_false_clears() {
    let mut engine = Engine::default();
    engine.upsert(rule(1, serde_json::json!({"name": "warm", "condition": "temperature > 8"})));
    let mut book = Book::new(vec![], 0);
    let events = run(&mut engine, &mut book, &[vec![temp("r1", 0, 9.0), temp("r1", 1, 8.0)]]);
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), vec![AlarmEvent::Raised, AlarmEvent::Cleared]);
}

#[test]
fn for_waits_until_the_condition_held_long_enough() {
    let mut engine = Engine::default();
    engine.upsert(rule(1, serde_json::json!({"name": "warm", "condition": "temperature > 8", "for": "5m"})));
    let mut book = Book::new(vec![], 0);
    // Interrupted at 3 min: the timer restarts at 4 min.
    let rows = vec![temp("r1", 0, 9.0), temp("r1", 3 * MIN, 5.0), temp("r1", 4 * MIN, 9.0), temp("r1", 8 * MIN, 9.0)];
    assert!(run(&mut engine, &mut book, &[rows]).is_empty());
    let events = run(&mut engine, &mut book, &[vec![temp("r1", 9 * MIN - 1, 9.0)], vec![temp("r1", 9 * MIN, 9.0)]]);
    assert_eq!(events, vec![(AlarmEvent::Raised, "r1".into(), 1)], "raised exactly when 5 minutes had passed");
    assert_eq!(book.open_alarms().next().unwrap().first_at, 9 * MIN);
}

#[test]
fn sliding_average_over_ten_minutes() {
    let mut engine = Engine::default();
    engine.upsert(rule(1, serde_json::json!({"name": "avg", "condition": "avg(temperature) over 10m > 6", "clear": "avg(temperature) over 10m < 5"})));
    let mut book = Book::new(vec![], 0);
    let rows: Vec<Row> = [(0, 4.0), (2, 6.0), (4, 7.0), (6, 8.0)].iter().map(|&(m, t)| temp("r1", m * MIN, t)).collect();
    // Averages: 4, 5, 5.67, 6.25 → raised at minute 6.
    let events = run(&mut engine, &mut book, &[rows]);
    assert_eq!(events, vec![(AlarmEvent::Raised, "r1".into(), 1)]);
    assert_eq!(book.open_alarms().next().unwrap().first_at, 6 * MIN);
    // Minute 17: only the points of minutes 8..17 count: 3 and 4 → 3.5 < 5 → cleared.
    let events = run(&mut engine, &mut book, &[vec![temp("r1", 8 * MIN, 3.0), temp("r1", 17 * MIN, 4.0)]]);
    assert_eq!(events.last().unwrap().0, AlarmEvent::Cleared);
}

#[test]
fn attributes_and_scope_choose_the_devices() {
    let mut engine = Engine::default();
    engine.upsert(rule(
        1,
        serde_json::json!({"name": "vaccines", "scope": {"profile": "reefer"},
        "condition": "temperature > 8 AND attributes.cargo = 'vaccines'"}),
    ));
    let mut book = Book::new(vec![], 0);
    let rows = vec![temp("r1", 0, 9.0), temp("r2", 0, 9.0), temp("t1", 0, 9.0), temp("unknown", 0, 99.0)];
    let events = run(&mut engine, &mut book, &[rows]);
    assert_eq!(events, vec![(AlarmEvent::Raised, "r1".into(), 1)]);
}

#[test]
fn repeats_do_not_open_new_alarms() {
    let mut engine = Engine::default();
    engine.upsert(rule(1, serde_json::json!({"name": "warm", "condition": "temperature > 8"})));
    let mut book = Book::new(vec![], 0);
    let rows: Vec<Row> = (0..50).map(|i| temp("r1", i, 9.0 + i as f64)).collect();
    let events = run(&mut engine, &mut book, &[rows]);
    assert_eq!(events.len(), 1);
    let alarm = book.open_alarms().next().unwrap();
    assert_eq!((alarm.count, alarm.last_values["temperature"].as_f64()), (50, Some(58.0)));
}

#[test]
fn absence_raises_after_silence_and_data_clears_it() {
    let mut engine = Engine::default();
    engine.upsert(rule(1, serde_json::json!({"name": "offline", "absence": "15m", "scope": {"profile": "reefer"}})));
    let devices: Vec<Arc<DeviceFacts>> = fleet().into_values().collect();
    let mut heard = HashMap::new();
    heard.insert("r1".to_string(), 0);
    heard.insert("t1".to_string(), 0);
    assert!(engine.check_absence(14 * MIN, &devices, &heard).is_empty());
    let raised = engine.check_absence(15 * MIN, &devices, &heard);
    // r2 was never heard from (not silent: never connected); t1 is out of scope.
    assert_eq!(raised.len(), 1);
    assert!(matches!(&raised[0], Transition::Raise { device, .. } if device == "r1"));
    assert!(engine.check_absence(16 * MIN, &devices, &heard).is_empty(), "raised once");
    let cleared = engine.evaluate("telemetry", &[temp("r1", 17 * MIN, 5.0)], &fleet());
    assert!(matches!(&cleared[..], [Transition::Clear { device, .. }] if device == "r1"));
}

#[test]
fn a_missing_field_matches_nothing() {
    let mut engine = Engine::default();
    engine.upsert(rule(1, serde_json::json!({"name": "warm", "condition": "temperature > 8"})));
    let rows = vec![Row::new(0, "r1").field("humidity", FieldValue::Float(99.0))];
    assert!(engine.evaluate("telemetry", &rows, &fleet()).is_empty());
    assert!(engine.evaluate("other_table", &[temp("r1", 0, 99.0)], &fleet()).is_empty(), "another table");
}

#[test]
fn interleaved_devices_keep_their_own_windows_and_timers() {
    let mut engine = Engine::default();
    engine.upsert(rule(1, serde_json::json!({"name": "avg", "condition": "avg(temperature) over 10m > 6", "for": "2m"})));
    let mut book = Book::new(vec![], 0);
    // r1 runs hot, r2 cool, their rows interleaved in one pass: only r1's average crosses 6, and
    // only once it held for two minutes.
    let rows: Vec<Row> = (0..4).flat_map(|m| [temp("r1", m * MIN, 9.0), temp("r2", m * MIN, 3.0)]).collect();
    let events = run(&mut engine, &mut book, &[rows]);
    assert_eq!(events, vec![(AlarmEvent::Raised, "r1".into(), 1)]);
    assert_eq!(book.open_alarms().next().unwrap().first_at, 2 * MIN);
    // r2 warming up later reaches its own average, computed from its own points only.
    let events = run(&mut engine, &mut book, &[(4..9).map(|m| temp("r2", m * MIN, 12.0)).collect()]);
    assert_eq!(events, vec![(AlarmEvent::Raised, "r2".into(), 1)]);
}

#[test]
fn rules_share_a_window_and_a_new_rule_starts_with_its_history() {
    let mut engine = Engine::default();
    engine.upsert(rule(1, serde_json::json!({"name": "warm", "condition": "avg(temperature) over 10m > 6"})));
    let mut book = Book::new(vec![], 0);
    let history: Vec<Row> = (0..5).map(|m| temp("r1", m * MIN, 7.0)).collect();
    assert_eq!(run(&mut engine, &mut book, &[history]).len(), 1, "rule 1 raised on the history");
    // Rule 2 uses the same window: its first row already averages the last ten minutes.
    engine.upsert(rule(2, serde_json::json!({"name": "hot", "condition": "avg(temperature) over 10m > 7.5"})));
    let events = run(&mut engine, &mut book, &[vec![temp("r1", 5 * MIN, 10.0)]]);
    assert!(events.is_empty(), "(5 x 7 + 10) / 6 = 7.5 is not above 7.5: {events:?}");
    let events = run(&mut engine, &mut book, &[vec![temp("r1", 6 * MIN, 10.0)]]);
    assert_eq!(events, vec![(AlarmEvent::Raised, "r1".into(), 1)], "(5 x 7 + 20) / 7 = 7.86 raises rule 2");
    // Removing both rules forgets the window.
    engine.remove(1);
    engine.remove(2);
    assert!(engine.windows.is_empty());
}
