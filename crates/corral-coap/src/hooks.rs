//! What the CoAP door needs from the platform: who a token belongs to, and where a device's
//! answer to a command goes. The binary implements it over the registry and the MQTT broker.

use async_trait::async_trait;
use corral_model::{DeviceId, TenantId, WireError};

/// The device a request speaks for, once its token was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    /// The device named in the path: the token's own device, or a child of that gateway.
    pub device: DeviceId,
    pub tenant: TenantId,
}

#[async_trait]
pub trait CoapHooks: Send + Sync + 'static {
    /// Checks that `token` (the `t` query parameter) is a device token that may speak for
    /// `device` (its own id, or a child of the gateway it belongs to), and counts the device as
    /// heard from. Errors are `Unauthenticated` (no or wrong token) or `Forbidden`.
    async fn authorize(&self, token: &str, device: &str) -> Result<Speaker, WireError>;

    /// A device's answer to command `command_id`, published where applications read it
    /// (`devices/<id>/commands/<command-id>/response`). Resolves once routed.
    async fn command_response(&self, speaker: &Speaker, command_id: &str, payload: Vec<u8>) -> Result<(), WireError>;
}
