//! The broker's part in the platform's [`Commands`]: commands and answers sent elsewhere (a rule,
//! the REST API, a CoAP device) are published on their MQTT topics, and those MQTT clients publish
//! are handed to the other doors. Messages carry the door they came from, so nothing loops.
//!
//! A command goes to `devices/<id>/commands/<command-id>` at QoS 1 (MQTT 5: with the response
//! topic `devices/<id>/commands/<command-id>/response` and the command id as correlation data).
//! The door tells the tracker how far it got: `sent` when a connected device's session queued
//! it, `delivered` when the device (or the gateway speaking for it) acknowledged it, whenever
//! that is — after a reconnect, after a restart. A command published to a persistent session
//! that is offline waits in it, durable, and is reported when it is acknowledged.
//!
//! The tracker hands a command over again when its device comes back. A command the device's
//! session still holds, or that was acknowledged a moment ago, is not published twice: a
//! receipt is given under the session lock that forgets the message, so when
//! [`Broker::session_holds`] says no, the receipt is in the channel already, and it is read
//! before deciding.

use crate::codec::{QoS, ReasonCode};
use crate::hooks::Identity as Client;
use crate::{Acknowledged, Broker, PublishProperties};
use corral_model::{DeviceId, Door};
use corral_services::{Carried, Command, CommandProgress, CommandResponse, Commands, Identity};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

const COMMANDS: &str = "devices/+/commands/+";
const ANSWERS: &str = "devices/+/commands/+/response";
/// Receipts remembered after they were reported: enough to cover a device's commands handed
/// over again while the tracker records that they were delivered.
const REMEMBERED_RECEIPTS: usize = 16_384;

/// Starts carrying commands both ways between the broker and `commands`; subscribes before it
/// returns, so nothing sent afterwards is missed. The tasks end with the broker.
pub fn carry_commands(broker: Broker, commands: Arc<dyn Commands>) -> Result<(), crate::BrokerError> {
    let mut sent = commands.subscribe();
    let mut answered = commands.responses();
    let mut from_clients = broker.tap(COMMANDS, 4096)?;
    let mut answers_from_clients = broker.tap(ANSWERS, 4096)?;
    let receipts = broker.acknowledgements(COMMANDS, 4096)?;
    let mut door = CommandDoor { broker, commands: commands.clone(), receipts, delivered: Remembered::default() };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                command = sent.recv() => match command {
                    Ok(c) if c.from != Some(Door::Mqtt) => door.carry(&c).await,
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "commands came faster than MQTT published them"),
                    Err(RecvError::Closed) => return,
                },
                response = answered.recv() => match response {
                    Ok(r) if r.from != Some(Door::Mqtt) => {
                        let topic = format!("devices/{}/commands/{}/response", r.device, r.id);
                        if let Err(e) = door.broker.publish_from_platform(&topic, r.payload.clone(), QoS::AtLeastOnce, false).await {
                            tracing::warn!(%topic, error = %e, "command response not published on MQTT");
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "command responses came faster than MQTT published them"),
                    Err(RecvError::Closed) => return,
                },
                Some(receipt) = door.receipts.recv() => door.heard_receipt(receipt),
            }
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(m) = from_clients.recv() => {
                    // Published by the platform (`origin_client` is none): it came from the bus.
                    let Some((device, id)) = m.from_client.then(|| levels(&m.topic)).flatten() else { continue };
                    let tenant = m.tenant.as_deref().and_then(|t| corral_model::TenantId::new(t).ok());
                    let _ = commands.send(Command::new(device, tenant, id, m.payload, Some(Door::Mqtt))).await;
                }
                Some(m) = answers_from_clients.recv() => {
                    let Some((device, id)) = m.from_client.then(|| levels(&m.topic)).flatten() else { continue };
                    let tenant = m.tenant.as_deref().and_then(|t| corral_model::TenantId::new(t).ok());
                    let response = CommandResponse { device, tenant, id, payload: m.payload, from: Some(Door::Mqtt) };
                    let _ = commands.respond(response).await;
                }
                else => return,
            }
        }
    });
    Ok(())
}

/// What carries the platform's commands to MQTT devices. Owned by the task that publishes them,
/// which also reads the receipts, so the two are never out of step.
struct CommandDoor {
    broker: Broker,
    commands: Arc<dyn Commands>,
    receipts: mpsc::Receiver<Acknowledged>,
    /// Command topics a device acknowledged lately.
    delivered: Remembered,
}

impl CommandDoor {
    /// Publishes a command unless its device already has it; reports it sent when a connected
    /// device's session queued it.
    async fn carry(&mut self, command: &Command) {
        let topic = format!("devices/{}/commands/{}", command.device, command.id);
        // In this order: a receipt for what the session no longer holds is in the channel.
        let held = self.held_by_a_device(&topic);
        while let Ok(receipt) = self.receipts.try_recv() {
            self.heard_receipt(receipt);
        }
        if held || self.delivered.contains(&topic) {
            tracing::debug!(%topic, "the device has this command already; not published again");
            return;
        }
        let properties = PublishProperties {
            response_topic: Some(format!("{topic}/response")),
            correlation_data: Some(bytes::Bytes::copy_from_slice(command.id.as_bytes())),
            content_type: Some("application/json".into()),
            // A command a persistent session holds past its expiry is dropped there, not obeyed late.
            message_expiry_secs: command.expires_at_ms.map(seconds_until),
        };
        let tenant = command.tenant.as_ref().map(|t| t.as_str());
        match self.broker.publish_with_properties(&topic, command.payload.clone(), QoS::AtLeastOnce, tenant, properties).await {
            // Queued for an offline session only: it waits there and is reported when taken.
            Ok(recipients) if recipients.iter().any(|r| r.online && r.device.is_some()) => {
                self.report(&command.device, &command.id, Carried::Sent);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%topic, error = %e, "command not published on MQTT"),
        }
    }

    /// Whether a device's session (the device's, or a gateway's that speaks for it: only these
    /// may subscribe to its topics) holds `topic` unacknowledged. Applications watching commands
    /// do not count.
    fn held_by_a_device(&self, topic: &str) -> bool {
        let subscribers = self.broker.subscribers(topic);
        subscribers.iter().filter(|s| s.device.is_some()).any(|s| self.broker.session_holds(&s.client_id, topic))
    }

    /// A client took a command: delivered, when that client is a device (an application that
    /// watches commands taking its copy says nothing about the device).
    fn heard_receipt(&mut self, receipt: Acknowledged) {
        if receipt.device.is_none() {
            return;
        }
        let Some((device, id)) = levels(&receipt.topic) else { return };
        self.delivered.insert(receipt.topic);
        self.report(&device, &id, Carried::Delivered);
    }

    fn report(&self, device: &DeviceId, id: &str, step: Carried) {
        self.commands.progress(CommandProgress { device: device.clone(), id: id.to_string(), door: Door::Mqtt, step });
    }
}

/// The last [`REMEMBERED_RECEIPTS`] topics, oldest forgotten first.
#[derive(Default)]
struct Remembered {
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
}

impl Remembered {
    fn insert(&mut self, topic: Arc<str>) {
        if !self.set.insert(topic.clone()) {
            return;
        }
        self.order.push_back(topic);
        if self.order.len() > REMEMBERED_RECEIPTS
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
    }

    fn contains(&self, topic: &str) -> bool {
        self.set.contains(topic)
    }
}

/// Whether a session subscribed to `filter` takes the commands of `device`: the filter matches
/// `devices/<device>/commands/<any id>` (`devices/d1/commands/+`, `devices/d1/#`; not one
/// command's own topic).
pub(super) fn takes_commands_of(filter: &str, device: &str) -> bool {
    let inner = crate::topic::parse_shared(filter).map_or(filter, |(_, f)| f);
    // `+` is no topic level a command id can be, so only a wildcard level matches it.
    crate::topic::matches(inner, &format!("devices/{device}/commands/+"))
}

/// `devices/<id>/commands/<command-id>[/response]` → the device and the command id.
fn levels(topic: &str) -> Option<(DeviceId, String)> {
    let mut levels = topic.split('/');
    let (_, device, _, id) = (levels.next()?, levels.next()?, levels.next()?, levels.next()?);
    Some((DeviceId::new(device).ok()?, id.to_string()))
}

/// A device whose token was rotated, or whose status or gateway changed, is disconnected (MQTT 5
/// reason 0x98), and so is a gateway speaking for it: each must reconnect with what holds now.
pub async fn disconnect_on_credential_changes(broker: Broker, identity: Arc<dyn Identity>) {
    let mut changes = identity.credential_changes();
    loop {
        let device = match changes.recv().await {
            Ok(device) => device,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "credential changes came faster than handled; disconnecting every device");
                broker.disconnect_client_where(ReasonCode::ADMINISTRATIVE_ACTION, |who| matches!(who, Client::Device { .. }));
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let id = device.as_str();
        let n = broker.disconnect_client_where(ReasonCode::ADMINISTRATIVE_ACTION, |who| match who {
            Client::Device { id: d, children, .. } => d == id || children.iter().any(|c| c == id),
            _ => false,
        });
        if n > 0 {
            tracing::info!(device = id, connections = n, "credentials changed: disconnected");
        }
    }
}

/// A broker user whose password or rules changed, or who was removed, is disconnected (MQTT 5
/// reason 0x98): it reconnects with what holds now, or not at all.
pub async fn disconnect_on_broker_user_changes(broker: Broker, users: Arc<dyn corral_services::BrokerUsers>) {
    let mut changes = users.broker_user_changes();
    loop {
        let name = match changes.recv().await {
            Ok(name) => name,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "broker user changes came faster than handled; disconnecting every broker user");
                broker.disconnect_client_where(ReasonCode::ADMINISTRATIVE_ACTION, |who| matches!(who, Client::User { .. }));
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let n = broker.disconnect_client_where(
            ReasonCode::ADMINISTRATIVE_ACTION,
            |who| matches!(who, Client::User { name: u, .. } if *u == name),
        );
        if n > 0 {
            tracing::info!(user = %name, connections = n, "broker user changed: disconnected");
        }
    }
}

/// Whole seconds (at least 1) from now to `at_ms`, Unix milliseconds.
fn seconds_until(at_ms: i64) -> u32 {
    let now_ms = chrono::Utc::now().timestamp_millis();
    u32::try_from((at_ms - now_ms).div_euclid(1000).max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_takes_a_devices_commands_when_it_matches_any_command_id() {
        for filter in
            ["devices/d1/commands/+", "devices/d1/commands/#", "devices/d1/#", "devices/+/commands/+", "$share/g/devices/d1/#"]
        {
            assert!(takes_commands_of(filter, "d1"), "{filter}");
        }
        for filter in [
            "devices/d1/commands/cmd_1",
            "devices/d1/commands/+/response",
            "devices/d2/#",
            "devices/d1/telemetry",
            "devices/d1/commands",
        ] {
            assert!(!takes_commands_of(filter, "d1"), "{filter}");
        }
    }

    #[test]
    fn command_topics_name_the_device_and_the_command() {
        assert_eq!(levels("devices/d1/commands/cmd_7"), Some((DeviceId::new("d1").unwrap(), "cmd_7".into())));
        assert_eq!(levels("devices/d1/commands/cmd_7/response").map(|(_, id)| id), Some("cmd_7".into()));
        assert_eq!(levels("devices/d1/commands"), None);
    }

    #[test]
    fn remembered_receipts_forget_the_oldest_first() {
        let mut remembered = Remembered::default();
        for i in 0..=REMEMBERED_RECEIPTS {
            remembered.insert(Arc::from(format!("t/{i}")));
        }
        assert!(!remembered.contains("t/0"));
        assert!(remembered.contains("t/1") && remembered.contains(&format!("t/{REMEMBERED_RECEIPTS}")));
        assert_eq!(remembered.set.len(), REMEMBERED_RECEIPTS);
    }
}
