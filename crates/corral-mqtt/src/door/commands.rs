//! The broker's part in the platform's [`Commands`]: commands and answers sent elsewhere (a rule,
//! the REST API, a CoAP device) are published on their MQTT topics, and those MQTT clients publish
//! are handed to the other doors. Messages carry the door they came from, so nothing loops.

use crate::Broker;
use crate::codec::{QoS, ReasonCode};
use crate::hooks::Identity as Client;
use corral_model::{DeviceId, Door};
use corral_services::{Command, CommandResponse, Commands, Identity};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Starts carrying commands both ways between the broker and `commands`; subscribes before it
/// returns, so nothing sent afterwards is missed. The tasks end with the broker.
pub fn carry_commands(broker: Broker, commands: Arc<dyn Commands>) -> Result<(), crate::BrokerError> {
    let mut sent = commands.subscribe();
    let mut answered = commands.responses();
    let mut from_clients = broker.tap("devices/+/commands/+", 4096)?;
    let mut answers_from_clients = broker.tap("devices/+/commands/+/response", 4096)?;
    let to_mqtt = broker.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                command = sent.recv() => match command {
                    Ok(c) if c.from != Some(Door::Mqtt) => {
                        let topic = format!("devices/{}/commands/{}", c.device, c.id);
                        let tenant = c.tenant.as_ref().map(|t| t.as_str());
                        if let Err(e) = to_mqtt.publish_for_tenant(&topic, c.payload.clone(), QoS::AtLeastOnce, false, tenant).await {
                            tracing::warn!(%topic, error = %e, "command not published on MQTT");
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "commands came faster than MQTT published them"),
                    Err(RecvError::Closed) => return,
                },
                response = answered.recv() => match response {
                    Ok(r) if r.from != Some(Door::Mqtt) => {
                        let topic = format!("devices/{}/commands/{}/response", r.device, r.id);
                        if let Err(e) = to_mqtt.publish_from_platform(&topic, r.payload.clone(), QoS::AtLeastOnce, false).await {
                            tracing::warn!(%topic, error = %e, "command response not published on MQTT");
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "command responses came faster than MQTT published them"),
                    Err(RecvError::Closed) => return,
                },
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
