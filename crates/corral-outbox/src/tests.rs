//! The outbox driven by hand: a fake target that fails as told, a `ManualClock` that moves only
//! when the test says so, and `deliver_due` instead of the loop — no sleeping, no timing luck.

use crate::*;
use corral_services::{Clock, ManualClock};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const START_NS: i64 = 1_800_000_000_000_000_000;
const START_MS: i64 = START_NS / 1_000_000;

static NAMES: MetricNames = MetricNames {
    pending: Family { name: "t_outbox_pending", help: "Waiting." },
    delivered: Family { name: "t_outbox_delivered_total", help: "Delivered." },
    failed_attempts: Family { name: "t_outbox_failed_attempts_total", help: "Failed attempts." },
    dead: Family { name: "t_outbox_dead_total", help: "Dead." },
    delivery_seconds: Family { name: "t_outbox_delivery_seconds", help: "Latency." },
    kind_label: "target",
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Hook {
    url: String,
}

/// Fails the first `fail_first` attempts (permanently if `permanent`), then succeeds.
#[derive(Default)]
struct Flaky {
    fail_first: u32,
    permanent: bool,
    attempts: AtomicU32,
}

impl Deliver for Flaky {
    type Target = Hook;

    fn kind(&self, _: &Hook) -> &'static str {
        "hook"
    }

    async fn deliver(&self, entry: &Delivery<Hook>) -> Result<(), AttemptError> {
        assert_eq!(entry.target.url, "https://example.com/in");
        let n = self.attempts.fetch_add(1, Ordering::SeqCst);
        match n < self.fail_first {
            true if self.permanent => Err(AttemptError::permanent("denied")),
            true => Err(AttemptError::retry(format!("receiver down ({})", n + 1))),
            false => Ok(()),
        }
    }
}

struct Host {
    _dir: tempfile::TempDir,
    pool: sqlx::SqlitePool,
    clock: ManualClock,
    outbox: Arc<Outbox>,
}

async fn host(max_attempts: u32) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("host.db")).create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql("CREATE TABLE alarms (id INTEGER PRIMARY KEY)").execute(&mut *conn).await.unwrap();
    schema::create(&mut conn).await.unwrap();
    drop(conn);
    let clock = ManualClock::at(START_NS);
    let retry = RetryPolicy { max_attempts, base_ms: 1_000, max_ms: 60_000, concurrency: 4 };
    let outbox = Arc::new(Outbox::open(pool.clone(), retry, Arc::new(clock.clone()), &NAMES).await.unwrap());
    Host { _dir: dir, pool, clock, outbox }
}

fn entry(owner_id: i64, tenant: &str) -> NewEntry<Hook> {
    NewEntry {
        idempotency_key: format!("alarm-{owner_id}-raised-0"),
        owner_kind: "alarm",
        owner_id,
        tenant: Some(tenant.to_string()),
        event: "raised".into(),
        target: Hook { url: "https://example.com/in".into() },
        payload: format!("{{\"alarm\":{owner_id}}}"),
    }
}

impl Host {
    /// Commits a host row and its entry together, as a room does.
    async fn commit(&self, entries: &[NewEntry<Hook>]) {
        let mut tx = self.pool.begin().await.unwrap();
        for e in entries {
            sqlx::query("INSERT INTO alarms (id) VALUES (?)").bind(e.owner_id).execute(&mut *tx).await.unwrap();
        }
        let added = self.outbox.enqueue(&mut tx, entries).await.unwrap();
        tx.commit().await.unwrap();
        self.outbox.enqueued(added);
    }

    async fn only(&self) -> Record {
        let all = self.outbox.list(&ListFilter { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        all.into_iter().next().unwrap()
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        let mut e = corral_services::metrics::Exposition::new(&mut out);
        self.outbox.render_pending(&mut e);
        self.outbox.render_deliveries(&mut e);
        out
    }
}

#[tokio::test]
async fn a_delivery_that_fails_twice_is_retried_as_the_clock_moves_and_then_delivered() {
    let h = host(5).await;
    let flaky = Flaky { fail_first: 2, ..Default::default() };
    h.commit(&[entry(1, "acme")]).await;
    assert_eq!(h.outbox.pending(), 1);

    assert_eq!(h.outbox.deliver_due(&flaky).await.unwrap(), 1);
    let first = h.only().await;
    assert_eq!((first.state, first.attempts, first.last_error.as_deref()), (State::Pending, 1, Some("receiver down (1)")));
    assert!((START_MS + 500..=START_MS + 1_000).contains(&first.next_attempt_at_ms), "1 s base, half of it jittered");
    assert_eq!(h.outbox.deliver_due(&flaky).await.unwrap(), 0, "not due until the clock moves");

    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.outbox.deliver_due(&flaky).await.unwrap(), 1);
    let second = h.only().await;
    assert_eq!((second.state, second.attempts), (State::Pending, 2));
    let now = h.clock.now_ms();
    assert!((now + 1_000..=now + 2_000).contains(&second.next_attempt_at_ms), "the delay doubles");

    h.clock.advance(Duration::from_secs(2));
    assert_eq!(h.outbox.deliver_due(&flaky).await.unwrap(), 1);
    let done = h.only().await;
    assert_eq!((done.state, done.attempts, done.last_error), (State::Delivered, 3, None));
    assert_eq!(done.delivered_at_ms, Some(START_MS + 3_000), "delivered at the clock's time");
    assert_eq!(h.outbox.deliver_due(&flaky).await.unwrap(), 0);
    assert_eq!(h.outbox.pending(), 0);

    let text = h.metrics();
    for line in [
        "t_outbox_pending 0\n",
        "t_outbox_delivered_total{target=\"hook\"} 1\n",
        "t_outbox_failed_attempts_total{target=\"hook\"} 2\n",
        "t_outbox_dead_total{target=\"hook\"} 0\n",
        "t_outbox_delivery_seconds_bucket{le=\"1\"} 0\n",
        "t_outbox_delivery_seconds_bucket{le=\"5\"} 1\n",
        "t_outbox_delivery_seconds_sum 3.000000\n",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
}

#[tokio::test]
async fn the_attempt_limit_parks_an_entry_as_dead_until_an_operator_retries_it() {
    let h = host(2).await;
    let down = Flaky { fail_first: u32::MAX, ..Default::default() };
    h.commit(&[entry(1, "acme")]).await;
    h.outbox.deliver_due(&down).await.unwrap();
    h.clock.advance(Duration::from_secs(1));
    h.outbox.deliver_due(&down).await.unwrap();
    let dead = h.only().await;
    assert_eq!((dead.state, dead.attempts), (State::Dead, 2));
    assert_eq!(h.outbox.pending(), 0);
    h.clock.advance(Duration::from_secs(3_600));
    assert_eq!(h.outbox.deliver_due(&down).await.unwrap(), 0, "a dead entry is never attempted by itself");
    assert!(h.metrics().contains("t_outbox_dead_total{target=\"hook\"} 1\n"));

    let revived = h.outbox.retry(dead.id, Scope::default()).await.unwrap();
    assert_eq!((revived.state, revived.attempts, revived.next_attempt_at_ms), (State::Pending, 0, h.clock.now_ms()));
    assert_eq!(h.outbox.pending(), 1);
    let up = Flaky::default();
    assert_eq!(h.outbox.deliver_due(&up).await.unwrap(), 1);
    assert_eq!(h.only().await.state, State::Delivered);
    assert!(matches!(h.outbox.retry(dead.id, Scope::default()).await, Err(OutboxError::AlreadyDelivered(id)) if id == dead.id));
}

#[tokio::test]
async fn a_permanent_failure_goes_dead_at_once() {
    let h = host(12).await;
    h.commit(&[entry(1, "acme")]).await;
    h.outbox.deliver_due(&Flaky { fail_first: 1, permanent: true, ..Default::default() }).await.unwrap();
    let dead = h.only().await;
    assert_eq!((dead.state, dead.attempts, dead.last_error.as_deref()), (State::Dead, 1, Some("denied")));
}

#[tokio::test]
async fn entries_commit_with_the_hosts_transaction_and_a_repeated_key_is_dropped() {
    let h = host(5).await;
    let mut tx = h.pool.begin().await.unwrap();
    assert_eq!(h.outbox.enqueue(&mut tx, &[entry(1, "acme")]).await.unwrap(), 1);
    tx.rollback().await.unwrap();
    assert!(h.outbox.list(&ListFilter { limit: 10, ..Default::default() }).await.unwrap().is_empty());

    h.commit(&[entry(1, "acme")]).await;
    let mut tx = h.pool.begin().await.unwrap();
    assert_eq!(h.outbox.enqueue(&mut tx, &[entry(1, "acme")]).await.unwrap(), 0, "same idempotency key");
    tx.commit().await.unwrap();
    assert_eq!(h.outbox.pending(), 1);
    assert_eq!(h.only().await.target::<Hook>().unwrap(), Hook { url: "https://example.com/in".into() });
}

#[tokio::test]
async fn a_scoped_caller_sees_and_retries_only_its_tenants_entries() {
    let h = host(5).await;
    h.commit(&[entry(1, "acme"), entry(2, "globex")]).await;
    let acme = Scope { owner_kind: Some("alarm"), tenant: Some("acme") };
    let listed = h.outbox.list(&ListFilter { scope: acme, limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(listed.iter().map(|r| r.owner_id).collect::<Vec<_>>(), [1]);
    let all = h.outbox.list(&ListFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|r| r.owner_id).collect::<Vec<_>>(), [2, 1], "newest first");
    let globex = all[0].id;
    assert!(matches!(h.outbox.get(globex, acme).await, Err(OutboxError::NotFound(_))));
    assert!(matches!(h.outbox.retry(globex, acme).await, Err(OutboxError::NotFound(_))));
    let other_kind = Scope { owner_kind: Some("campaign"), tenant: None };
    assert!(h.outbox.list(&ListFilter { scope: other_kind, limit: 10, ..Default::default() }).await.unwrap().is_empty());
    let pending = ListFilter { state: Some(State::Pending), limit: 1, before: Some(globex), ..Default::default() };
    assert_eq!(h.outbox.list(&pending).await.unwrap()[0].owner_id, 1, "pages by id");
}

/// The loop itself: an entry committed while it waits is delivered without anyone calling it.
#[tokio::test]
async fn the_loop_delivers_what_is_enqueued() {
    struct Signal(tokio::sync::mpsc::UnboundedSender<String>);
    impl Deliver for Signal {
        type Target = Hook;
        fn kind(&self, _: &Hook) -> &'static str {
            "hook"
        }
        async fn deliver(&self, entry: &Delivery<Hook>) -> Result<(), AttemptError> {
            self.0.send(entry.idempotency_key.clone()).map_err(|e| AttemptError::retry(e.to_string()))
        }
    }
    let h = host(5).await;
    let (tx, mut delivered) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(h.outbox.clone().run(Signal(tx)));
    h.commit(&[entry(7, "acme")]).await;
    let key = tokio::time::timeout(Duration::from_secs(10), delivered.recv()).await.expect("delivered within 10 s");
    assert_eq!(key.as_deref(), Some("alarm-7-raised-0"));
}
