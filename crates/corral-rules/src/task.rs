//! The rules task: takes durable batches off the queue, evaluates them, applies the transitions to
//! the alarm book, and commits alarm changes and outbox entries together; on a timer it runs the
//! absence checks. One task, so a device's messages are evaluated in the order they were stored.

use crate::alarm::{Alarm, Book, Transition};
use crate::engine::{ActiveRule, DeviceFacts, Engine};
use crate::metrics::Metrics;
use crate::outbox::{self, Target};
use crate::spec::AlarmEvent;
use crate::{Observation, Platform, db};
use corral_model::Row;
use corral_outbox::{NewEntry, Outbox};
use corral_services::Clock;
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Device facts are re-read from the registry after this long, so attribute edits reach rules.
const FACTS_TTL: Duration = Duration::from_secs(10);
/// Absence rules re-list the fleet this often.
const FLEET_TTL: Duration = Duration::from_secs(30);
/// Observations taken off the queue per evaluation pass (one Arrow batch per table).
const MAX_PER_PASS: usize = 4_096;
/// A pass with this many rows starts at once: the per-pass cost is already spread thin.
const ENOUGH_ROWS: usize = 8_192;

/// The engine and what only the rules task changes, behind one lock that API calls also take
/// when they add or remove rules.
pub(crate) struct EngineState {
    pub engine: Engine,
    /// When this process last received data from each device (Unix ns).
    pub last_heard: HashMap<String, i64>,
    fleet: Vec<Arc<DeviceFacts>>,
    fleet_read: Option<Instant>,
}

/// State shared by the rules task, the API and the pipeline's observer.
pub(crate) struct Shared {
    pub pool: SqlitePool,
    pub platform: Arc<dyn Platform>,
    /// What time it is: absence checks, alarm and event times, outbox due times.
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub state: tokio::sync::Mutex<EngineState>,
    pub book: Mutex<Book>,
    /// Serializes writes of the book's changes, so a later write never carries older state.
    flush: tokio::sync::Mutex<()>,
    /// How many rules are enabled, beside the engine so `Rules::wants` needs no lock.
    pub enabled: std::sync::atomic::AtomicUsize,
    /// Observations handed over and not yet evaluated and committed.
    pub unsettled: std::sync::atomic::AtomicUsize,
    /// The durable outbox in the same database: alarm changes and their entries commit together.
    pub outbox: Arc<Outbox>,
    facts: Mutex<HashMap<String, (Arc<DeviceFacts>, Instant)>>,
}

impl Shared {
    pub async fn load(
        pool: SqlitePool,
        platform: Arc<dyn Platform>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        outbox: Arc<Outbox>,
    ) -> Result<Shared, crate::RulesError> {
        let mut engine = Engine::default();
        for (id, spec) in crate::api::load_specs(&pool).await? {
            match ActiveRule::new(id, spec, &metrics) {
                Ok(rule) => engine.upsert(rule),
                Err(e) => tracing::error!(rule = id, error = %e, "stored rule no longer compiles; skipped"),
            }
        }
        let (open, max_id) = db::open_alarms(&pool).await?;
        for alarm in &open {
            engine.mark_raised(alarm.rule_id, &alarm.device);
        }
        metrics.alarms_open.store(open.len() as i64, Ordering::Relaxed);
        tracing::info!(rules = engine.rules.len(), open_alarms = open.len(), outbox_pending = outbox.pending(), "rules loaded");
        Ok(Shared {
            pool,
            platform,
            clock,
            metrics,
            enabled: std::sync::atomic::AtomicUsize::new(engine.enabled()),
            unsettled: std::sync::atomic::AtomicUsize::new(0),
            state: tokio::sync::Mutex::new(EngineState {
                engine,
                last_heard: HashMap::new(),
                fleet: Vec::new(),
                fleet_read: None,
            }),
            book: Mutex::new(Book::new(open, max_id)),
            flush: tokio::sync::Mutex::new(()),
            outbox,
            facts: Mutex::new(HashMap::new()),
        })
    }

    /// Facts for every device in `ids`, from the cache or the registry.
    async fn facts_for(&self, ids: &[&str]) -> HashMap<String, Arc<DeviceFacts>> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.facts.lock().expect("facts lock");
            for &id in ids {
                if out.contains_key(id) || missing.contains(&id) {
                    continue;
                }
                match cache.get(id) {
                    Some((facts, read)) if read.elapsed() < FACTS_TTL => {
                        out.insert(id.to_string(), facts.clone());
                    }
                    _ => missing.push(id),
                }
            }
        }
        for id in missing {
            if let Some(facts) = self.platform.device(id).await {
                let facts = Arc::new(facts);
                self.facts.lock().expect("facts lock").insert(id.to_string(), (facts.clone(), Instant::now()));
                out.insert(id.to_string(), facts);
            }
        }
        out
    }

    /// Applies transitions, then commits the alarm changes with the outbox entries their events
    /// trigger, then tells MQTT subscribers. `engine` gives each rule's actions.
    pub async fn settle(&self, engine: &Engine, transitions: Vec<Transition>) {
        let events: Vec<(AlarmEvent, Alarm)> = {
            let mut book = self.book.lock().expect("book lock");
            transitions.into_iter().filter_map(|t| book.apply(t)).collect()
        };
        self.commit(engine, events).await;
    }

    /// Writes the book's changes and the outbox entries for `events`, then announces them.
    pub async fn commit(&self, engine: &Engine, events: Vec<(AlarmEvent, Alarm)>) {
        let mut entries = Vec::new();
        for (event, alarm) in &events {
            match event {
                AlarmEvent::Raised => self.metrics.alarms_raised.fetch_add(1, Ordering::Relaxed),
                AlarmEvent::Cleared => self.metrics.alarms_cleared.fetch_add(1, Ordering::Relaxed),
                AlarmEvent::Acknowledged => 0,
            };
            let Some(rule) = engine.rules.iter().find(|r| r.id == alarm.rule_id) else { continue };
            let payload = event_payload(*event, alarm, self.clock.now_ns());
            for (i, action) in rule.spec.actions.iter().enumerate().filter(|(_, a)| a.on().contains(event)) {
                entries.push(outbox::entry(*event, alarm, i, action, &payload));
            }
        }
        if let Err(e) = self.write(&entries).await {
            // The alarms stay correct in memory and are written with the next change; the
            // actions of these events are lost, which the log says loudly.
            tracing::error!(error = %e, actions = entries.len(), "writing alarms and outbox failed");
        }
        self.metrics.alarms_open.store(self.book.lock().expect("book lock").open_count() as i64, Ordering::Relaxed);
        for (event, alarm) in &events {
            let topic = format!("alarms/{}/{}", alarm.tenant, alarm.device);
            if let Err(e) =
                self.platform.publish(&topic, event_payload(*event, alarm, self.clock.now_ns()).into_bytes(), &alarm.tenant).await
            {
                tracing::debug!(%topic, error = %e, "alarm event not published on MQTT");
            }
        }
    }

    async fn write(&self, entries: &[NewEntry<Target>]) -> Result<(), crate::RulesError> {
        let _serial = self.flush.lock().await;
        let alarms = self.book.lock().expect("book lock").take_changes();
        if alarms.is_empty() && entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        db::upsert_alarms(&mut tx, &alarms).await?;
        let added = self.outbox.enqueue(&mut tx, entries).await?;
        tx.commit().await?;
        self.outbox.enqueued(added);
        Ok(())
    }

    pub fn forget_facts(&self) {
        self.facts.lock().expect("facts lock").clear();
    }
}

/// The JSON every action and MQTT subscriber receives for an alarm event.
pub fn event_payload(event: AlarmEvent, alarm: &Alarm, now_ns: i64) -> String {
    serde_json::json!({
        "event": format!("alarm.{}", event.as_str()),
        "event_id": format!("alarm-{}-{}", alarm.id, event.as_str()),
        "time": crate::alarm::format_ns(now_ns),
        "alarm": alarm,
    })
    .to_string()
}

/// The rules task's clocks.
pub(crate) struct Timing {
    pub absence_every: Duration,
    /// How long a pass gathers observations after its first one.
    pub linger: Duration,
}

pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Observation>, timing: Timing) {
    let mut tick = tokio::time::interval(timing.absence_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            first = queue.recv() => {
                let Some(first) = first else { return };
                let pass = gather(&mut queue, first, timing.linger).await;
                let n = pass.len();
                evaluate(&shared, pass).await;
                shared.unsettled.fetch_sub(n, Ordering::AcqRel);
            }
            _ = tick.tick() => check_absence(&shared).await,
        }
    }
}

/// One pass: `first` and whatever else arrives within `linger` of it, until the pass is full.
async fn gather(queue: &mut mpsc::Receiver<Observation>, first: Observation, linger: Duration) -> Vec<Observation> {
    let deadline = tokio::time::Instant::now() + linger;
    let mut rows = rows_in(&first);
    let mut pass = vec![first];
    while pass.len() < MAX_PER_PASS && rows < ENOUGH_ROWS {
        let more = match queue.try_recv() {
            Ok(more) => more,
            Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(more)) => more,
                Ok(None) | Err(_) => break,
            },
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        rows += rows_in(&more);
        pass.push(more);
    }
    pass
}

fn rows_in(observation: &Observation) -> usize {
    observation.batches.iter().map(|b| b.rows.len()).sum()
}

async fn evaluate(shared: &Shared, pass: Vec<Observation>) {
    let mut ids: Vec<&str> = Vec::new();
    for row in pass.iter().flat_map(|o| &o.batches).flat_map(|b| &b.rows) {
        if ids.last() != Some(&row.device.as_str()) {
            ids.push(&row.device);
        }
    }
    let facts = shared.facts_for(&ids).await;
    drop(ids);
    let mut state = shared.state.lock().await;
    let mut tables: Vec<(String, Vec<Row>)> = Vec::new();
    for observation in pass {
        for batch in observation.batches {
            let mut previous: Option<&str> = None;
            for row in &batch.rows {
                if previous == Some(row.device.as_str()) {
                    continue;
                }
                previous = Some(&row.device);
                let at = observation.received_at_ns;
                match state.last_heard.get_mut(&row.device) {
                    Some(heard) => *heard = (*heard).max(at),
                    None => _ = state.last_heard.insert(row.device.clone(), at),
                }
            }
            match tables.iter_mut().find(|(t, _)| t == batch.table.as_str()) {
                Some((_, rows)) => rows.extend(batch.rows),
                None => tables.push((batch.table.as_str().to_string(), batch.rows)),
            }
        }
    }
    shared.metrics.passes.fetch_add(1, Ordering::Relaxed);
    shared.metrics.pass_rows.fetch_add(tables.iter().map(|(_, rows)| rows.len() as u64).sum(), Ordering::Relaxed);
    let mut transitions = Vec::new();
    for (table, rows) in &tables {
        transitions.extend(state.engine.evaluate(table, rows, &facts));
    }
    if !transitions.is_empty() {
        shared.settle(&state.engine, transitions).await;
    }
}

pub(crate) async fn check_absence(shared: &Shared) {
    let stale = {
        let state = shared.state.lock().await;
        if !state.engine.wants_clock() {
            return;
        }
        state.fleet_read.is_none_or(|t| t.elapsed() > FLEET_TTL)
    };
    let fleet = if stale { Some(shared.platform.devices().await.into_iter().map(Arc::new).collect()) } else { None };
    let mut state = shared.state.lock().await;
    if let Some(fleet) = fleet {
        state.fleet = fleet;
        state.fleet_read = Some(Instant::now());
    }
    let now = shared.clock.now_ns();
    let EngineState { engine, last_heard, fleet, .. } = &mut *state;
    let transitions = engine.check_absence(now, fleet, last_heard);
    if !transitions.is_empty() {
        shared.settle(&state.engine, transitions).await;
    }
}
