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
}

impl Command {
    pub fn new(
        device: DeviceId,
        tenant: Option<TenantId>,
        id: impl Into<String>,
        payload: impl Into<Bytes>,
        from: Option<Door>,
    ) -> Self {
        Command { device, tenant, id: id.into(), payload: payload.into(), from }
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
}

/// [`Commands`] in one process: a broadcast channel each way. A listener that falls more than
/// `capacity` messages behind loses the oldest (and is told so by `RecvError::Lagged`); commands
/// are not durable here: the sender learns only that a door took it.
#[derive(Debug, Clone)]
pub struct CommandBus {
    commands: broadcast::Sender<Arc<Command>>,
    responses: broadcast::Sender<Arc<CommandResponse>>,
}

impl CommandBus {
    pub fn new(capacity: usize) -> Self {
        CommandBus { commands: broadcast::channel(capacity.max(1)).0, responses: broadcast::channel(capacity.max(1)).0 }
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
