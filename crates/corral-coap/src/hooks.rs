//! What the CoAP door needs from the platform: who a token or a DTLS session speaks for, the
//! pre-shared key of a device, and where a device's answer to a command goes. The binary implements it over the registry and the MQTT broker.

use async_trait::async_trait;
use corral_model::{DeviceId, TenantId, WireError};

/// The device a request speaks for, once its token was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    /// The device named in the path: the token's own device, or a child of that gateway.
    pub device: DeviceId,
    pub tenant: TenantId,
}

/// How a request proves who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// The `t` query parameter: a device token.
    Token(&'a str),
    /// The request came on a DTLS session opened with this device's pre-shared key.
    Session(&'a str),
}

#[async_trait]
pub trait CoapHooks: Send + Sync + 'static {
    /// Checks that `credential` may speak for `device` (the credential's own device, or a child
    /// of the gateway it belongs to), and counts the device as heard from. Errors are
    /// `Unauthenticated` (wrong token) or `Forbidden`.
    async fn authorize(&self, credential: Credential<'_>, device: &str) -> Result<Speaker, WireError>;

    /// The pre-shared key of the device whose id is `identity`, for a DTLS handshake.
    /// `Unauthenticated` when it has none, `Forbidden` when it is not active.
    async fn psk(&self, identity: &str) -> Result<Vec<u8>, WireError>;

    /// A device's answer to command `command_id`, published where applications read it
    /// (`devices/<id>/commands/<command-id>/response`). Resolves once routed.
    async fn command_response(&self, speaker: &Speaker, command_id: &str, payload: Vec<u8>) -> Result<(), WireError>;
}
