//! The tracker on a real SQLite ledger, a real in-process bus standing in for the doors, and a
//! manual clock: the lifecycle step by step, answers over the bus, expiry, a device that comes
//! back, HTTP polling, bulk counts, and durability across a reopen.

use corral_commands::{
    CommandError, CommandFilter, CommandLedger, CommandState, NewCommand, SqliteLedger, TrackedCommand, Tracker,
};
use corral_model::{DeviceId, Door, TenantId};
use corral_services::{Carried, Clock, CommandBus, CommandProgress, CommandResponse, Commands, ManualClock};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const T0_NS: i64 = 1_700_000_000_000_000_000;

fn device(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn new(id: &str, name: &str, timeout_ms: i64) -> NewCommand {
    NewCommand {
        device: device(id),
        tenant: TenantId::default_tenant(),
        name: name.into(),
        payload: json!({"delay_s": 5}),
        timeout_ms,
        job: None,
        created_by: "ops".into(),
        key: None,
    }
}

struct Fixture {
    tracker: Tracker,
    bus: Arc<CommandBus>,
    clock: ManualClock,
    ledger: Arc<SqliteLedger>,
}

async fn fixture() -> Fixture {
    let clock = ManualClock::at(T0_NS);
    let bus = Arc::new(CommandBus::new(64));
    let ledger = Arc::new(SqliteLedger::open_in_memory().await.unwrap());
    let tracker = Tracker::new(ledger.clone(), bus.clone(), Arc::new(clock.clone()));
    tracker.start().await.unwrap();
    Fixture { tracker, bus, clock, ledger }
}

/// Waits (bounded) until the command reaches `state`: the tracker records door reports on its
/// own task.
async fn reaches(tracker: &Tracker, id: &str, state: CommandState) -> TrackedCommand {
    for _ in 0..200 {
        let command = tracker.get(id, None).await.unwrap();
        if command.state == state {
            return command;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{id} never reached {state}: {:?}", tracker.get(id, None).await.unwrap());
}

fn report(id: &str, step: Carried) -> CommandProgress {
    CommandProgress { device: device("d1"), id: id.into(), door: Door::Mqtt, step }
}

#[tokio::test]
async fn a_command_moves_from_queued_to_succeeded_each_step_timestamped() {
    let f = fixture().await;
    let mut door = f.bus.subscribe();
    let command = f.tracker.create(new("d1", "open-door", 30_000)).await.unwrap();
    assert_eq!(command.state, CommandState::Queued);
    assert_eq!(command.expires_at_ms, f.clock.now_ms() + 30_000);

    // The door hears it with the body the device gets.
    let carried = door.recv().await.unwrap();
    assert_eq!(carried.id, command.id);
    let body: Value = serde_json::from_slice(&carried.payload).unwrap();
    assert_eq!(body, json!({"id": command.id, "name": "open-door", "payload": {"delay_s": 5}}));

    f.clock.advance(Duration::from_millis(10));
    f.bus.progress(report(&command.id, Carried::Sent));
    let sent = reaches(&f.tracker, &command.id, CommandState::Sent).await;
    assert_eq!((sent.sent_at_ms, sent.door.as_deref()), (Some(command.created_at_ms + 10), Some("mqtt")));
    f.clock.advance(Duration::from_millis(10));
    f.bus.progress(report(&command.id, Carried::Delivered));
    let delivered = reaches(&f.tracker, &command.id, CommandState::Delivered).await;
    assert_eq!(delivered.delivered_at_ms, Some(command.created_at_ms + 20));

    // `wait` returns the answer as soon as it comes.
    let waiting = {
        let tracker = f.tracker.clone();
        let id = command.id.clone();
        tokio::spawn(async move { tracker.wait(&id, None, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let answer = br#"{"status": "succeeded", "payload": {"opened": true}}"#;
    let response = CommandResponse {
        device: device("d1"),
        tenant: None,
        id: command.id.clone(),
        payload: answer[..].into(),
        from: Some(Door::Mqtt),
    };
    f.bus.respond(response).await.unwrap();
    let done = waiting.await.unwrap().unwrap();
    assert_eq!(done.state, CommandState::Succeeded);
    assert_eq!(done.response, Some(json!({"opened": true})));
    assert!(done.finished_at_ms.is_some());

    // A late transport ack or a second answer changes nothing.
    f.bus.progress(report(&command.id, Carried::Delivered));
    let again = f.tracker.answer(&device("d1"), &command.id, br#"{"status": "failed"}"#).await;
    assert!(matches!(again, Err(CommandError::Final(_))), "{again:?}");
    assert_eq!(f.tracker.get(&command.id, None).await.unwrap().state, CommandState::Succeeded);
}

#[tokio::test]
async fn a_device_answers_only_its_own_commands_and_failures_keep_their_reason() {
    let f = fixture().await;
    let command = f.tracker.create(new("d1", "reboot", 30_000)).await.unwrap();
    let other = f.tracker.answer(&device("d2"), &command.id, b"").await;
    assert!(matches!(other, Err(CommandError::NotFound(_))), "another device cannot answer it");
    let failed = f.tracker.answer(&device("d1"), &command.id, br#"{"status": "failed", "reason": "low battery"}"#).await.unwrap();
    assert_eq!((failed.state, failed.reason.as_deref()), (CommandState::Failed, Some("low battery")));
    let bad = f.tracker.create(new("d1", "reboot", 30_000)).await.unwrap();
    assert!(matches!(
        f.tracker.answer(&device("d1"), &bad.id, br#"{"status": "perhaps"}"#).await,
        Err(CommandError::BadInput(_))
    ));
    assert_eq!(f.tracker.get(&bad.id, None).await.unwrap().state, CommandState::Queued, "nothing recorded");
}

#[tokio::test]
async fn unanswered_commands_expire_on_the_clock_and_a_late_answer_is_refused() {
    let f = fixture().await;
    let short = f.tracker.create(new("d1", "ping", 1_000)).await.unwrap();
    let long = f.tracker.create(new("d1", "ping", 60_000)).await.unwrap();
    f.bus.progress(report(&short.id, Carried::Delivered));
    reaches(&f.tracker, &short.id, CommandState::Delivered).await;

    f.clock.advance(Duration::from_millis(999));
    assert!(f.tracker.expire_due().await.unwrap().is_empty(), "not yet");
    f.clock.advance(Duration::from_millis(1));
    // The tracker's own loop may get there first; either way it is expired now.
    f.tracker.expire_due().await.unwrap();
    let expired = f.tracker.get(&short.id, None).await.unwrap();
    assert_eq!(expired.state, CommandState::Expired);
    assert_eq!(expired.reason.as_deref(), Some("delivered, but the device did not answer in time"));
    assert_eq!(f.tracker.get(&long.id, None).await.unwrap().state, CommandState::Queued);
    assert!(matches!(f.tracker.answer(&device("d1"), &short.id, b"").await, Err(CommandError::Final(_))));
}

#[tokio::test]
async fn a_device_that_comes_back_gets_what_waited_for_it_and_not_what_it_has() {
    let clock = ManualClock::at(T0_NS);
    let bus = Arc::new(CommandBus::new(64));
    let ledger = Arc::new(SqliteLedger::open_in_memory().await.unwrap());
    let tracker = Tracker::new(ledger, bus.clone(), Arc::new(clock));
    tracker.start().await.unwrap();

    // No door is running: the commands wait in the ledger.
    let first = tracker.create(new("d1", "a", 60_000)).await.unwrap();
    let second = tracker.create(new("d1", "b", 60_000)).await.unwrap();
    let delivered = tracker.create(new("d1", "c", 60_000)).await.unwrap();
    bus.progress(CommandProgress { device: device("d1"), id: delivered.id.clone(), door: Door::Coap, step: Carried::Delivered });
    reaches(&tracker, &delivered.id, CommandState::Delivered).await;

    let mut door = bus.subscribe();
    bus.ready(device("d1"), Door::Mqtt);
    let got = [door.recv().await.unwrap().id.clone(), door.recv().await.unwrap().id.clone()];
    assert_eq!(got, [first.id.clone(), second.id.clone()], "oldest first, the delivered one not again");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(door.try_recv().is_err(), "nothing more");
}

#[tokio::test]
async fn an_http_device_polls_its_commands_one_by_one() {
    let f = fixture().await;
    let first = f.tracker.create(new("d1", "a", 60_000)).await.unwrap();
    let second = f.tracker.create(new("d1", "b", 60_000)).await.unwrap();
    let taken = f.tracker.take_next(&device("d1"), Door::Http).await.unwrap().unwrap();
    assert_eq!(
        (taken.id.as_str(), taken.state, taken.door.as_deref()),
        (first.id.as_str(), CommandState::Delivered, Some("http"))
    );
    assert_eq!(f.tracker.take_next(&device("d1"), Door::Http).await.unwrap().unwrap().id, second.id);
    assert!(f.tracker.take_next(&device("d1"), Door::Http).await.unwrap().is_none());
    assert!(f.tracker.take_next(&device("d2"), Door::Http).await.unwrap().is_none());
}

#[tokio::test]
async fn a_bulk_job_counts_its_commands_by_state_and_lists_page_by_page() {
    let f = fixture().await;
    let many: Vec<NewCommand> =
        (0..5).map(|i| NewCommand { job: Some("job-1".into()), ..new(&format!("d{i}"), "sync", 60_000) }).collect();
    let created = f.tracker.create_many(many).await.unwrap();
    f.tracker.answer(&device("d0"), &created[0].id, b"").await.unwrap();
    f.tracker.answer(&device("d1"), &created[1].id, br#"{"status": "rejected"}"#).await.unwrap();
    let counts = f.tracker.job_counts("job-1", None).await.unwrap();
    let counts: Vec<(String, u64)> = counts.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
    assert_eq!(counts, [("queued".into(), 3), ("succeeded".into(), 1), ("rejected".into(), 1)]);
    assert!(f.tracker.job_counts("job-1", Some("other-tenant")).await.unwrap().is_empty(), "scoped");

    let page = |after: Option<String>| CommandFilter { job: Some("job-1".into()), after, limit: 2, ..CommandFilter::default() };
    let one = f.ledger.list(&page(None), None).await.unwrap();
    let two = f.ledger.list(&page(one.last().map(|c| c.id.clone())), None).await.unwrap();
    let ids: Vec<&str> = one.iter().chain(&two).map(|c| c.id.as_str()).collect();
    assert_eq!(ids, created[..4].iter().map(|c| c.id.as_str()).collect::<Vec<_>>());
    let queued = CommandFilter { state: Some(CommandState::Queued), limit: 10, ..CommandFilter::default() };
    assert_eq!(f.ledger.list(&queued, None).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_recorded_command_is_there_after_the_file_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("commands.db");
    let ledger = SqliteLedger::open(&path, 0).await.unwrap();
    let command = ledger.create(new("d1", "reboot", 60_000), 1_000).await.unwrap();
    ledger.mark_sent(&device("d1"), &command.id, "mqtt", 1_001).await.unwrap();
    let stranger = ledger.mark_delivered(&device("d2"), &command.id, "mqtt", 1_002).await;
    assert!(matches!(stranger, Ok(None)), "another device's ack moves nothing: {stranger:?}");
    ledger.close().await;
    let reopened = SqliteLedger::open(&path, 0).await.unwrap();
    let open = reopened.open_for(&device("d1")).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].id.as_str(), open[0].state, open[0].sent_at_ms), (command.id.as_str(), CommandState::Sent, Some(1_001)));
    assert!(matches!(reopened.get(&command.id, Some("globex")).await, Err(CommandError::NotFound(_))), "tenant scope");
}

#[tokio::test]
async fn an_order_retried_with_the_same_key_commands_the_device_once() {
    use corral_services::{CommandOrder, IssueCommands};
    let f = fixture().await;
    let mut doors = f.bus.subscribe();
    let order = CommandOrder {
        device: device("d1"),
        tenant: TenantId::default_tenant(),
        name: "siren".into(),
        payload: json!({"on": true}),
        timeout: Duration::from_secs(60),
        created_by: "rule:7".into(),
        key: Some("alarm-42-raise-0".into()),
    };
    let first = f.tracker.issue(order.clone()).await.unwrap();
    // A retry later (after a crash, say) returns the first command and sends nothing again.
    f.clock.advance(Duration::from_secs(5));
    let again = f.tracker.issue(order.clone()).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(doors.try_recv().unwrap().id, first);
    assert!(doors.try_recv().is_err(), "the retry was not handed to the doors again");
    let other = f.tracker.issue(CommandOrder { key: Some("alarm-42-raise-1".into()), ..order }).await.unwrap();
    assert_ne!(first, other);
    let all = f.ledger.list(&CommandFilter { limit: 10, ..CommandFilter::default() }, None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].created_by, "rule:7");
}

#[tokio::test]
async fn finished_commands_leave_after_their_retention_and_open_ones_stay() {
    let f = fixture().await;
    let day = Duration::from_secs(86_400);
    let old = f.tracker.create(new("d1", "reboot", 30_000)).await.unwrap();
    f.tracker.answer(&device("d1"), &old.id, b"").await.unwrap();
    // Open for a week: older than the retention, but not finished.
    let waiting = f.tracker.create(new("d1", "reboot", 7 * 86_400_000)).await.unwrap();
    f.clock.advance(2 * day);
    let recent = f.tracker.create(new("d1", "reboot", 30_000)).await.unwrap();
    f.tracker.answer(&device("d1"), &recent.id, br#"{"status": "failed"}"#).await.unwrap();

    f.clock.advance(day / 2);
    assert_eq!(f.tracker.purge_finished(2 * day).await.unwrap(), 1, "only the one finished more than two days ago");
    assert!(matches!(f.tracker.get(&old.id, None).await, Err(CommandError::NotFound(_))));
    assert_eq!(f.tracker.get(&waiting.id, None).await.unwrap().state, CommandState::Queued);
    assert_eq!(f.tracker.get(&recent.id, None).await.unwrap().state, CommandState::Failed);
    assert_eq!(f.tracker.purge_finished(2 * day).await.unwrap(), 0, "nothing twice");

    // A backlog larger than one batch goes in one purge.
    let many: Vec<_> = (0..2500).map(|_| new("d2", "ping", 1_000)).collect();
    f.tracker.create_many(many).await.unwrap();
    f.clock.advance(Duration::from_secs(2));
    // Expired here or by the tracker's own loop, whichever takes the write lock first.
    f.tracker.expire_due().await.unwrap();
    f.clock.advance(3 * day);
    assert_eq!(f.tracker.purge_finished(2 * day).await.unwrap(), 2501, "the backlog and `recent`");
    assert_eq!(f.tracker.get(&waiting.id, None).await.unwrap().state, CommandState::Queued, "still open, still kept");
}
