//! Commands to devices, whatever door they use.
//!
//! A command is sent once, to [`Commands`]; every door that can carry commands subscribes and
//! delivers it to the devices it serves: the MQTT broker publishes it on
//! `devices/<id>/commands/<command-id>`, the CoAP server pushes it to the device's observation.
//! A device's answer comes back the same way ([`Commands::respond`]). So a rule's command action or
//! a REST call reaches a CoAP device with MQTT turned off, and nothing about commands lives in
//! the broker.
//!
//! Each message names the door it came from, so a door does not carry its own traffic twice (the
//! broker already routed a command an MQTT application published).

use async_trait::async_trait;
use bytes::Bytes;
use corral_model::{DeviceId, Door, ErrorKind, TenantId, WireError};
use std::sync::Arc;
use tokio::sync::broadcast;

/// A command for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub device: DeviceId,
    /// The tenant it is sent on behalf of, so tenant-scoped listeners see it (`None`: unscoped).
    pub tenant: Option<TenantId>,
    /// The command id, the last level of `devices/<id>/commands/<command-id>`.
    pub id: String,
    pub payload: Bytes,
    /// The door it came in through, which already delivered it to its own listeners; `None`
    /// when the platform itself sent it (a rule, the REST API).
    pub from: Option<Door>,
    /// A tracked command (`corral-commands`): `payload` is the whole body the device receives
    /// (`{"id", "name", "payload"}`) and doors report how far they carried it
    /// ([`Commands::progress`]). Untracked ones (an application publishing on a device's command
    /// topic) carry only a payload.
    pub tracked: bool,
    /// When a tracked command expires (Unix ms): a door that can say so (MQTT's message expiry)
    /// keeps it from reaching a device after that.
    pub expires_at_ms: Option<i64>,
}

impl Command {
    pub fn new(
        device: DeviceId,
        tenant: Option<TenantId>,
        id: impl Into<String>,
        payload: impl Into<Bytes>,
        from: Option<Door>,
    ) -> Self {
        Command { device, tenant, id: id.into(), payload: payload.into(), from, tracked: false, expires_at_ms: None }
    }

    /// A tracked command whose `body` is what the device receives, until `expires_at_ms`.
    pub fn tracked(
        device: DeviceId,
        tenant: TenantId,
        id: impl Into<String>,
        body: impl Into<Bytes>,
        expires_at_ms: i64,
    ) -> Self {
        let (id, payload) = (id.into(), body.into());
        Command { device, tenant: Some(tenant), id, payload, from: None, tracked: true, expires_at_ms: Some(expires_at_ms) }
    }
}

/// A device's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResponse {
    pub device: DeviceId,
    pub tenant: Option<TenantId>,
    /// The id of the command it answers.
    pub id: String,
    pub payload: Bytes,
    /// The door it came in through (see [`Command::from`]).
    pub from: Option<Door>,
}

/// Creates tracked commands, for rooms that command devices themselves (a rule's command
/// action, a campaign). Implemented by the tracker (`corral-commands`).
#[async_trait]
pub trait IssueCommands: Send + Sync + 'static {
    /// Records the command (durable when this returns) and sends it; returns its id. A second
    /// call with the same `key` returns the first command's id instead of creating another, so a
    /// caller that retries after a crash does not command the device twice.
    async fn issue(&self, command: CommandOrder) -> Result<String, WireError>;
}

/// What [`IssueCommands::issue`] is asked to send.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOrder {
    pub device: DeviceId,
    pub tenant: TenantId,
    pub name: String,
    pub payload: serde_json::Value,
    pub timeout: std::time::Duration,
    /// Who orders it, as the command records it (`rule:<id>`).
    pub created_by: String,
    /// Makes retries idempotent (see [`IssueCommands::issue`]).
    pub key: Option<String>,
}

/// How far a door carried a command to its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// Sent to the device (published to its connection, sent as a notification).
    Sent,
    /// The transport acknowledged it (MQTT PUBACK, CoAP ACK, an HTTP poll answered).
    Delivered,
}

/// A door's word on a command it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandProgress {
    pub device: DeviceId,
    /// The command id.
    pub id: String,
    pub door: Door,
    pub step: Carried,
}

/// Sends commands to devices and carries their answers back.
#[async_trait]
pub trait Commands: Send + Sync + 'static {
    /// Hands `command` to every door. `Unavailable` when no door is listening.
    async fn send(&self, command: Command) -> Result<(), WireError>;
    /// Every command sent from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Command>>;
    /// Hands a device's answer to whoever reads answers. `Unavailable` when nobody does.
    async fn respond(&self, response: CommandResponse) -> Result<(), WireError>;
    /// Every answer sent from now on.
    fn responses(&self) -> broadcast::Receiver<Arc<CommandResponse>>;
    /// A door tells how far it carried a command; whoever tracks commands listens.
    fn progress(&self, progress: CommandProgress);
    /// Every progress report from now on.
    fn progress_reports(&self) -> broadcast::Receiver<CommandProgress>;
    /// A device can take commands through `door` now (it subscribed to its commands, observes
    /// them, polls): whoever keeps commands for it hands over those still waiting.
    fn ready(&self, device: DeviceId, door: Door);
    /// Every device that became ready from now on.
    fn readiness(&self) -> broadcast::Receiver<(DeviceId, Door)>;
}

/// [`Commands`] in one process: a broadcast channel each way. A listener that falls more than
/// `capacity` messages behind loses the oldest (and is told so by `RecvError::Lagged`); commands
/// are not durable here: the sender learns only that a door took it.
#[derive(Debug, Clone)]
pub struct CommandBus {
    commands: broadcast::Sender<Arc<Command>>,
    responses: broadcast::Sender<Arc<CommandResponse>>,
    progress: broadcast::Sender<CommandProgress>,
    ready: broadcast::Sender<(DeviceId, Door)>,
}

impl CommandBus {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        CommandBus {
            commands: broadcast::channel(capacity).0,
            responses: broadcast::channel(capacity).0,
            progress: broadcast::channel(capacity).0,
            ready: broadcast::channel(capacity).0,
        }
    }
}

impl Default for CommandBus {
    fn default() -> Self {
        CommandBus::new(4096)
    }
}

#[async_trait]
impl Commands for CommandBus {
    async fn send(&self, command: Command) -> Result<(), WireError> {
        self.commands
            .send(Arc::new(command))
            .map(drop)
            .map_err(|_| WireError::new(ErrorKind::Unavailable, "no door that carries commands is running"))
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Command>> {
        self.commands.subscribe()
    }

    async fn respond(&self, response: CommandResponse) -> Result<(), WireError> {
        self.responses
            .send(Arc::new(response))
            .map(drop)
            .map_err(|_| WireError::new(ErrorKind::Unavailable, "command responses have nowhere to go (MQTT is off)"))
    }

    fn responses(&self) -> broadcast::Receiver<Arc<CommandResponse>> {
        self.responses.subscribe()
    }

    fn progress(&self, progress: CommandProgress) {
        // Nobody tracking commands (untracked use) is not an error.
        let _ = self.progress.send(progress);
    }

    fn progress_reports(&self) -> broadcast::Receiver<CommandProgress> {
        self.progress.subscribe()
    }

    fn ready(&self, device: DeviceId, door: Door) {
        let _ = self.ready.send((device, door));
    }

    fn readiness(&self) -> broadcast::Receiver<(DeviceId, Door)> {
        self.ready.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(from: Option<Door>) -> Command {
        Command::new(DeviceId::new("d1").unwrap(), None, "c1", &b"go"[..], from)
    }

    #[tokio::test]
    async fn every_listening_door_hears_a_command_and_nobody_listening_is_an_error() {
        let bus = CommandBus::new(8);
        let err = bus.send(command(None)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable, "sent into the void must not look delivered");
        let (mut mqtt, mut coap) = (bus.subscribe(), bus.subscribe());
        bus.send(command(Some(Door::Http))).await.unwrap();
        assert_eq!(mqtt.recv().await.unwrap().payload, Bytes::from_static(b"go"));
        assert_eq!(coap.recv().await.unwrap().from, Some(Door::Http));
    }

    #[tokio::test]
    async fn an_answer_without_a_reader_is_refused() {
        let bus = CommandBus::new(8);
        let response = CommandResponse {
            device: DeviceId::new("d1").unwrap(),
            tenant: None,
            id: "c1".into(),
            payload: Bytes::new(),
            from: Some(Door::Coap),
        };
        assert_eq!(bus.respond(response.clone()).await.unwrap_err().kind, ErrorKind::Unavailable);
        let mut reader = bus.responses();
        bus.respond(response.clone()).await.unwrap();
        assert_eq!(*reader.recv().await.unwrap(), response);
    }
}
