//! Tracked commands: every command to a device has an id and a life that can be followed —
//! `queued → sent → delivered → succeeded | failed | rejected | expired`, each step timestamped —
//! whatever door the device uses, across restarts.
//!
//! Place on the path: a fleet-operations room beside the registry, off the telemetry corridor.
//! The REST API, bulk jobs and the rules create commands through the [`Tracker`], which records
//! them in the [`CommandLedger`] first (durable: a `kill -9` loses none) and hands them to the
//! doors on the `corral_services::Commands` bus. Doors report how far they carried each one and
//! pass the device's answer back; a device that comes back (subscribes, observes, polls) gets the
//! commands still waiting for it. Commands whose timeout passed expire on the injected clock.
//!
//! - [`model`]: [`TrackedCommand`], [`CommandState`], the body a device receives
//!   (`{"id", "name", "payload"}`) and the [`Answer`] it sends (`{"status", "payload", "reason"}`).
//! - [`CommandLedger`]: the durable record, one trait; [`SqliteLedger`] keeps it in
//!   `<data-dir>/`[`DATABASE_FILE`].
//! - [`CommandsTable`]: the `commands` SQL table.
//! - [`CommandSettings`]: the `[commands]` section of the server config (how long finished
//!   commands are kept).

mod error;
mod ledger;
pub mod model;
mod sql;
mod sqlite;
mod tracker;

pub use error::CommandError;
pub use ledger::{CommandFilter, CommandLedger};
pub use model::{Answer, CommandState, DeviceCommand, NewCommand, TrackedCommand};
pub use sql::CommandsTable;
pub use sqlite::{DATABASE_FILE, MAX_PAGE, SqliteLedger};
pub use tracker::Tracker;

/// The `[commands]` section of the server config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CommandSettings {
    /// Days a finished command (answered or expired) is kept, counted from when it finished; then
    /// it leaves the ledger, `GET /api/v1/commands`, the `commands` table and its job's counts.
    /// Open commands are kept until they finish. 0 keeps finished commands forever.
    pub retention_days: u64,
}

impl Default for CommandSettings {
    fn default() -> Self {
        CommandSettings { retention_days: 30 }
    }
}

impl CommandSettings {
    /// How long a finished command is kept; `None`: forever.
    pub fn retention(&self) -> Option<std::time::Duration> {
        (self.retention_days > 0).then(|| std::time::Duration::from_secs(self.retention_days.saturating_mul(86_400)))
    }
}
