//! The durable record of every command ([`CommandLedger`]): one trait, so the SQLite ledger of
//! the single binary and a PostgreSQL one in cluster mode are interchangeable.
//!
//! Every method that changes a command is a compare-and-set on its state: it applies only when
//! the command is at an earlier step than the one it moves to, so a transport ack that arrives
//! after the device's answer, a second answer, or an answer after expiry change nothing.

use crate::CommandError;
use crate::model::{Answer, CommandState, NewCommand, TrackedCommand};
use async_trait::async_trait;
use corral_model::DeviceId;
use std::collections::BTreeMap;

/// Which commands to list. Every filter narrows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandFilter {
    pub device: Option<DeviceId>,
    pub state: Option<CommandState>,
    pub job: Option<String>,
    /// Only commands created after this one (the previous page's last id).
    pub after: Option<String>,
    pub limit: usize,
}

#[async_trait]
pub trait CommandLedger: Send + Sync {
    /// Records a new command, queued; durable when it returns.
    async fn create(&self, new: NewCommand, now_ms: i64) -> Result<TrackedCommand, CommandError>;

    /// Records many at once (a bulk job), in one transaction.
    async fn create_many(&self, new: Vec<NewCommand>, now_ms: i64) -> Result<Vec<TrackedCommand>, CommandError>;

    /// A command in `scope` (`None`: every tenant).
    async fn get(&self, id: &str, scope: Option<&str>) -> Result<TrackedCommand, CommandError>;

    /// Commands in `scope`, oldest first.
    async fn list(&self, filter: &CommandFilter, scope: Option<&str>) -> Result<Vec<TrackedCommand>, CommandError>;

    /// A device's commands that are not final, oldest first: what to carry to it when it is back.
    async fn open_for(&self, device: &DeviceId) -> Result<Vec<TrackedCommand>, CommandError>;

    /// `queued` → `sent` to `device` through `door`. `None` when `device` has no such command
    /// before that step (it moved on, or is another device's: a door's report is not checked
    /// twice for a reason nobody acts on).
    async fn mark_sent(
        &self,
        device: &DeviceId,
        id: &str,
        door: &str,
        now_ms: i64,
    ) -> Result<Option<TrackedCommand>, CommandError>;

    /// `queued`/`sent` → `delivered` to `device` through `door`; `None` as for [`Self::mark_sent`].
    async fn mark_delivered(
        &self,
        device: &DeviceId,
        id: &str,
        door: &str,
        now_ms: i64,
    ) -> Result<Option<TrackedCommand>, CommandError>;

    /// The device's answer: any open state → the answer's state (a device that answers received
    /// the command, so a step not reported yet gets the answer's time). [`CommandError::Final`] when it
    /// was final already; [`CommandError::NotFound`] when `device` has no such command (a device
    /// answers only its own).
    async fn answer(&self, device: &DeviceId, id: &str, answer: Answer, now_ms: i64) -> Result<TrackedCommand, CommandError>;

    /// Every open command whose time ran out at `now_ms` becomes `expired`; returns them.
    async fn expire_due(&self, now_ms: i64) -> Result<Vec<TrackedCommand>, CommandError>;

    /// How many commands of `job` are in each state (states with none are absent).
    async fn job_counts(&self, job: &str, scope: Option<&str>) -> Result<BTreeMap<CommandState, u64>, CommandError>;

    /// Deletes up to `limit` final commands that finished before `before_ms`, oldest first;
    /// returns how many. Open commands are never deleted, however old.
    async fn purge_finished(&self, before_ms: i64, limit: usize) -> Result<u64, CommandError>;

    /// When the next open command expires, if any (the expiry loop sleeps until then).
    async fn next_expiry(&self) -> Result<Option<i64>, CommandError>;
}
