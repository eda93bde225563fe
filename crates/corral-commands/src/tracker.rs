//! [`Tracker`]: the tracked commands as the platform uses them. It records each command in the
//! [`CommandLedger`] before anything else (so a `kill -9` loses none), hands it to the doors
//! through the `Commands` bus, and moves it along as the doors and the device report:
//!
//! - a door that sent it, or had it acknowledged, says so ([`CommandProgress`]);
//! - the device's answer comes back on the bus from MQTT and CoAP, or directly ([`Tracker::answer`])
//!   from HTTP;
//! - a device that becomes ready (subscribed, observing, polling) gets its waiting commands
//!   again, so a command made while it was away reaches it when it is back, whatever its door;
//! - commands whose time ran out expire, on the injected clock.
//!
//! Every change is announced on [`Tracker::changes`], which is how `wait` and long polls hear it.

use crate::CommandError;
use crate::ledger::{CommandFilter, CommandLedger};
use crate::model::{Answer, CommandState, NewCommand, TrackedCommand};
use corral_model::{DeviceId, Door};
use corral_services::{Carried, Clock, Command, CommandOrder, CommandProgress, CommandResponse, Commands, IssueCommands};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, broadcast};

/// Changes a slow listener (a waiting request) may fall behind by.
const CHANGES_CAPACITY: usize = 4096;
/// How often finished commands past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Commands one purge statement deletes: the write lock is let go between batches, so a purge of
/// a long backlog never holds up the commands being created.
const PURGE_BATCH: usize = 1000;
/// The expiry loop looks at least this often, so a command created with a short timeout while
/// it slept is not late by more than this.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// The tracked commands. Clone it freely: clones share everything.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

struct Inner {
    ledger: Arc<dyn CommandLedger>,
    bus: Arc<dyn Commands>,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<TrackedCommand>,
    /// Wakes the expiry loop when a command is created that expires before the loop would look.
    created: Notify,
    /// When the sleeping expiry loop looks next (injected clock, ms); `i64::MAX` while it is
    /// awake, so every command created then wakes it again.
    looks_at: AtomicI64,
}

impl Tracker {
    pub fn new(ledger: Arc<dyn CommandLedger>, bus: Arc<dyn Commands>, clock: Arc<dyn Clock>) -> Tracker {
        let changes = broadcast::channel(CHANGES_CAPACITY).0;
        Tracker {
            inner: Arc::new(Inner { ledger, bus, clock, changes, created: Notify::new(), looks_at: AtomicI64::new(i64::MAX) }),
        }
    }

    /// Starts listening to the doors and expiring commands; subscribes before it returns, so
    /// nothing reported afterwards is missed. Commands waiting from before a restart go out when
    /// their devices come back (connect and subscribe, observe, poll), as after any absence.
    pub async fn start(&self) -> Result<(), CommandError> {
        let mut answers = self.inner.bus.responses();
        let mut progress = self.inner.bus.progress_reports();
        let mut ready = self.inner.bus.readiness();
        let tracker = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    answer = answers.recv() => match answer {
                        Ok(answer) => tracker.heard_answer(&answer).await,
                        Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "command answers came faster than they were recorded"),
                        Err(RecvError::Closed) => return,
                    },
                    report = progress.recv() => match report {
                        Ok(report) => tracker.heard_progress(&report).await,
                        Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "command deliveries came faster than they were recorded"),
                        Err(RecvError::Closed) => return,
                    },
                    device = ready.recv() => match device {
                        Ok((device, door)) => tracker.device_ready(&device, door).await,
                        Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "devices became ready faster than their commands were sent"),
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        });
        let tracker = self.clone();
        tokio::spawn(async move { tracker.expire_forever().await });
        Ok(())
    }

    /// Deletes finished commands once they have been finished for `retention` (by the injected
    /// clock), now and every hour after.
    pub fn keep_finished_for(&self, retention: Duration) {
        let tracker = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = tracker.purge_finished(retention).await {
                    tracing::warn!(error = %e, "deleting finished commands past their retention failed; trying again later");
                }
                tokio::time::sleep(PURGE_EVERY).await;
            }
        });
    }

    /// Deletes the commands that finished more than `retention` ago; returns how many.
    pub async fn purge_finished(&self, retention: Duration) -> Result<u64, CommandError> {
        let before = self.now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        let mut purged = 0;
        loop {
            let batch = self.inner.ledger.purge_finished(before, PURGE_BATCH).await?;
            purged += batch;
            if batch < PURGE_BATCH as u64 {
                break;
            }
        }
        if purged > 0 {
            tracing::info!(
                purged,
                retention_days = retention.as_secs() / 86_400,
                "finished commands past their retention deleted"
            );
        }
        Ok(purged)
    }

    /// Every change of any command from now on.
    pub fn changes(&self) -> broadcast::Receiver<TrackedCommand> {
        self.inner.changes.subscribe()
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn announce(&self, command: &TrackedCommand) {
        let _ = self.inner.changes.send(command.clone());
    }

    /// Records a command (durable when this returns) and hands it to the doors. A device that
    /// is away gets it when it is back, until the command expires.
    pub async fn create(&self, new: NewCommand) -> Result<TrackedCommand, CommandError> {
        let mut created = self.create_many(vec![new]).await?;
        created.pop().ok_or_else(|| CommandError::Storage("no command created".into()))
    }

    /// Records many commands in one transaction (a bulk job), then hands each to the doors.
    pub async fn create_many(&self, new: Vec<NewCommand>) -> Result<Vec<TrackedCommand>, CommandError> {
        let now = self.now_ms();
        let created = self.inner.ledger.create_many(new, now).await?;
        // Most commands expire long after the loop looks again: waking it to read the ledger
        // for nothing was one more statement on every command's way.
        if created.iter().any(|c| c.expires_at_ms < self.inner.looks_at.load(Ordering::Acquire)) {
            self.inner.created.notify_one();
        }
        // A retry with an idempotency key returns the command made before: it was handed to the
        // doors then, or waits for its device to be ready, so it is not sent a second time.
        let fresh: Vec<TrackedCommand> = created.iter().filter(|c| c.created_at_ms == now).cloned().collect();
        if let [command] = fresh.as_slice() {
            self.announce(command);
            self.dispatch(command).await;
        } else {
            // A bulk job: recorded (durable) already, so the doors get it in the background and
            // the request that made it answers at once.
            let (tracker, commands) = (self.clone(), fresh);
            tokio::spawn(async move {
                for command in &commands {
                    tracker.announce(command);
                    tracker.dispatch(command).await;
                }
            });
        }
        Ok(created)
    }

    /// Hands `command` to every door; a door that reaches the device sends it and reports so.
    /// No door running is not an error: the command waits in the ledger.
    async fn dispatch(&self, command: &TrackedCommand) {
        let bus_command = Command::tracked(
            command.device.clone(),
            command.tenant.clone(),
            command.id.as_str(),
            command.body(),
            command.expires_at_ms,
        );
        if let Err(e) = self.inner.bus.send(bus_command).await {
            tracing::debug!(command = %command.id, error = %e, "no door took the command now; it waits");
        }
    }

    pub async fn get(&self, id: &str, scope: Option<&str>) -> Result<TrackedCommand, CommandError> {
        self.inner.ledger.get(id, scope).await
    }

    pub async fn list(&self, filter: &CommandFilter, scope: Option<&str>) -> Result<Vec<TrackedCommand>, CommandError> {
        self.inner.ledger.list(filter, scope).await
    }

    pub async fn job_counts(&self, job: &str, scope: Option<&str>) -> Result<BTreeMap<CommandState, u64>, CommandError> {
        self.inner.ledger.job_counts(job, scope).await
    }

    /// The command once it is final, or as it is when `patience` ran out.
    pub async fn wait(&self, id: &str, scope: Option<&str>, patience: Duration) -> Result<TrackedCommand, CommandError> {
        // Listen first, then read: a change between the two is heard, not missed.
        let changes = self.changes();
        let command = self.get(id, scope).await?;
        self.wait_from(changes, command, scope, patience).await
    }

    /// [`Self::wait`] for a `command` the caller holds as it was when `changes` (from
    /// [`Self::changes`]) began listening, such as one it has just created: no read of the ledger
    /// unless changes were missed or the wait ran out.
    pub async fn wait_from(
        &self,
        mut changes: broadcast::Receiver<TrackedCommand>,
        command: TrackedCommand,
        scope: Option<&str>,
        patience: Duration,
    ) -> Result<TrackedCommand, CommandError> {
        if command.state.is_final() {
            return Ok(command);
        }
        let id = command.id.as_str();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(Ok(changed)) if changed.id == id && changed.state.is_final() => return Ok(changed),
                Ok(Ok(_)) => {}
                // Missed some: read the ledger, which has the truth.
                Ok(Err(RecvError::Lagged(_))) => {
                    let now = self.get(id, scope).await?;
                    if now.state.is_final() {
                        return Ok(now);
                    }
                }
                Ok(Err(RecvError::Closed)) | Err(_) => return self.get(id, scope).await,
            }
        }
    }

    /// A device's answer to one of its commands (`body` as in [`Answer::parse`]).
    pub async fn answer(&self, device: &DeviceId, id: &str, body: &[u8]) -> Result<TrackedCommand, CommandError> {
        let answer = Answer::parse(body).map_err(CommandError::BadInput)?;
        let command = self.inner.ledger.answer(device, id, answer, self.now_ms()).await?;
        tracing::info!(command = %command.id, device = %device, state = %command.state, "command answered");
        self.announce(&command);
        Ok(command)
    }

    /// The oldest command `device` has not received yet, marked delivered through `door` (an
    /// HTTP poll: the response is the delivery). `None` when nothing waits.
    pub async fn take_next(&self, device: &DeviceId, door: Door) -> Result<Option<TrackedCommand>, CommandError> {
        let open = self.inner.ledger.open_for(device).await?;
        for command in open.into_iter().filter(|c| c.state < CommandState::Delivered) {
            if let Some(delivered) = self.inner.ledger.mark_delivered(device, &command.id, door.as_str(), self.now_ms()).await? {
                self.announce(&delivered);
                return Ok(Some(delivered));
            }
        }
        Ok(None)
    }

    /// Expires what ran out now; returns it.
    pub async fn expire_due(&self) -> Result<Vec<TrackedCommand>, CommandError> {
        let expired = self.inner.ledger.expire_due(self.now_ms()).await?;
        for command in &expired {
            tracing::info!(command = %command.id, device = %command.device, "command expired");
            self.announce(command);
        }
        Ok(expired)
    }

    async fn expire_forever(&self) {
        loop {
            self.inner.looks_at.store(i64::MAX, Ordering::Release);
            let next = self.inner.ledger.next_expiry().await;
            let now = self.now_ms();
            // Only a due command takes the write lock: an idle ledger is read, not written.
            if let Ok(Some(at)) = next
                && at <= now
            {
                if let Err(e) = self.expire_due().await {
                    tracing::warn!(error = %e, "expiring commands failed; trying again shortly");
                    tokio::time::sleep(EXPIRY_TICK).await;
                }
                continue;
            }
            let sleep = match next {
                Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(EXPIRY_TICK),
                Ok(None) => EXPIRY_TICK,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the next command expiry failed");
                    EXPIRY_TICK
                }
            };
            let sleep_ms = i64::try_from(sleep.as_millis()).unwrap_or(i64::MAX);
            self.inner.looks_at.store(now.saturating_add(sleep_ms), Ordering::Release);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.inner.created.notified() => {}
            }
        }
    }

    async fn heard_answer(&self, response: &CommandResponse) {
        match self.answer(&response.device, &response.id, &response.payload).await {
            Ok(_) => {}
            // Not a tracked command (an application's own MQTT command), or answered already.
            Err(CommandError::NotFound(_)) | Err(CommandError::Final(_)) => {}
            Err(e) => tracing::warn!(command = %response.id, device = %response.device, error = %e, "answer not recorded"),
        }
    }

    async fn heard_progress(&self, report: &CommandProgress) {
        let now = self.now_ms();
        let door = report.door.as_str();
        let moved = match report.step {
            Carried::Sent => self.inner.ledger.mark_sent(&report.device, &report.id, door, now).await,
            Carried::Delivered => self.inner.ledger.mark_delivered(&report.device, &report.id, door, now).await,
        };
        match moved {
            Ok(Some(command)) => self.announce(&command),
            Ok(None) => {}
            Err(e) => tracing::warn!(command = %report.id, error = %e, "delivery not recorded"),
        }
    }

    /// Hands `device` its commands that it has not received yet, oldest first.
    async fn device_ready(&self, device: &DeviceId, door: Door) {
        let open = match self.inner.ledger.open_for(device).await {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(%device, error = %e, "waiting commands not read");
                return;
            }
        };
        let waiting: Vec<_> = open.into_iter().filter(|c| c.state < CommandState::Delivered).collect();
        if !waiting.is_empty() {
            tracing::info!(%device, door = door.as_str(), commands = waiting.len(), "device back: sending its waiting commands");
        }
        for command in &waiting {
            self.dispatch(command).await;
        }
    }
}

#[async_trait::async_trait]
impl IssueCommands for Tracker {
    async fn issue(&self, order: CommandOrder) -> Result<String, corral_model::WireError> {
        let new = NewCommand {
            device: order.device,
            tenant: order.tenant,
            name: order.name,
            payload: order.payload,
            timeout_ms: i64::try_from(order.timeout.as_millis()).unwrap_or(i64::MAX),
            job: None,
            created_by: order.created_by,
            key: order.key,
        };
        Ok(self.create(new).await?.id)
    }
}
