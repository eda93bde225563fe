//! The CoAP door's view of the platform ([`CoapHooks`]): who a token or a pre-shared key belongs
//! to (the registry), where a device's answers to commands go (the MQTT broker), and the
//! commands it hears from the broker for CoAP devices.

use async_trait::async_trait;
use corral_coap::{CoapHooks, CoapServer, Credential, Speaker};
use corral_model::{ErrorKind, WireError};
use corral_registry::{DeviceStatus, Principal, Registry};

pub struct PlatformHooks {
    pub registry: Registry,
    /// Without MQTT (`--mqtt off`) command responses have nowhere to go, and no commands come.
    pub broker: Option<corral_mqtt::Broker>,
}

#[async_trait]
impl CoapHooks for PlatformHooks {
    async fn authorize(&self, credential: Credential<'_>, device: &str) -> Result<Speaker, WireError> {
        let caller = match credential {
            Credential::Token(token) => self.registry.authenticate_device(token).await,
            // The session proved the key; the device may have left active since.
            Credential::Session(identity) => self.registry.authenticate_psk(identity).await.map(|(caller, _key)| caller),
        }
        .map_err(|e| e.to_wire())?;
        let speaker = if caller.id.as_str() == device {
            Speaker { device: caller.id, tenant: caller.tenant }
        } else {
            // A gateway speaks for its children (the same rule as its MQTT topics).
            let whose = match credential {
                Credential::Token(_) => format!("the token of {}", caller.id),
                Credential::Session(_) => format!("the DTLS session of {}", caller.id),
            };
            let forbidden = || WireError::new(ErrorKind::Forbidden, format!("{whose} may not speak for {device}"));
            let child = self.registry.get_device(&Principal::system(), device).await.map_err(|_| forbidden())?;
            if child.gateway.as_ref() != Some(&caller.id) {
                return Err(forbidden());
            }
            if child.status != DeviceStatus::Active {
                return Err(WireError::new(ErrorKind::Forbidden, format!("device {device} is {}", child.status)));
            }
            Speaker { device: child.id, tenant: child.tenant }
        };
        self.registry.touch(&speaker.device, chrono::Utc::now());
        Ok(speaker)
    }

    async fn psk(&self, identity: &str) -> Result<Vec<u8>, WireError> {
        let (_device, key) = self.registry.authenticate_psk(identity).await.map_err(|e| e.to_wire())?;
        Ok(key)
    }

    async fn command_response(&self, speaker: &Speaker, command_id: &str, payload: Vec<u8>) -> Result<(), WireError> {
        let broker =
            self.broker.as_ref().ok_or_else(|| WireError::unavailable("MQTT is off: command responses have nowhere to go"))?;
        let topic = format!("devices/{}/commands/{command_id}/response", speaker.device);
        broker
            .publish_from_platform(&topic, payload, corral_mqtt::QoS::AtLeastOnce, false)
            .await
            .map_err(|e| WireError::unavailable(format!("publishing the response: {e}")))
    }
}

/// Passes every command published on the broker (`devices/<id>/commands/<command-id>`) to the
/// CoAP server, which keeps it for devices that speak CoAP. Runs until the broker goes.
pub async fn pass_commands(broker: corral_mqtt::Broker, coap: CoapServer) {
    let mut commands = match broker.tap("devices/+/commands/+", 4096) {
        Ok(r) => r,
        Err(e) => return tracing::error!(error = %e, "cannot listen for commands; CoAP devices will not receive any"),
    };
    while let Some(message) = commands.recv().await {
        let mut levels = message.topic.split('/');
        if let (Some(_), Some(device), Some(_), Some(command_id)) = (levels.next(), levels.next(), levels.next(), levels.next()) {
            coap.command(device, command_id, &message.payload);
        }
    }
}

/// `/metrics` lines of the CoAP server.
pub struct CoapMetrics(pub CoapServer);

impl corral_http::MetricsSource for CoapMetrics {
    fn render(&self, out: &mut String) {
        self.0.render_metrics(out);
    }
}

/// A device whose token was rotated, or whose status or gateway changed, loses its observation
/// of commands: it must register again with what holds now.
pub async fn forget_on_credential_changes(registry: Registry, coap: CoapServer) {
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = registry.credential_changes();
    loop {
        match changes.recv().await {
            Ok(device) => coap.forget_device(device.as_str()),
            // Which devices changed is lost: no DTLS session is trusted any more.
            Err(RecvError::Lagged(_)) => coap.forget_all_sessions(),
            Err(RecvError::Closed) => return,
        }
    }
}
