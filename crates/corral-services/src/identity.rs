//! Who is speaking: the one place every door turns a credential into a device or an application.
//!
//! The rules that hold on every door live behind [`Identity`] (a token names one active device, a
//! gateway speaks only for its own active children, a certificate must chain to a registered CA);
//! what is particular to a door stays in the door (MQTT's client id must be the device id).

use async_trait::async_trait;
use corral_model::{DeviceId, TenantId, WireError};
use tokio::sync::broadcast;

/// A credential as a door received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A secret: a device token or an API token (told apart by the device-token prefix).
    Token(&'a str),
    /// A secret that can only be a device token (HTTP and CoAP telemetry).
    DeviceToken(&'a str),
    /// A client certificate (DER) that the TLS layer already verified against the CAs.
    Certificate(&'a [u8]),
    /// The identity of a DTLS session opened with a device's pre-shared key (the key was
    /// proved by the handshake; the device may have left `active` since).
    PskSession(&'a str),
}

/// A device, as a credential proved it: it is active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCaller {
    pub id: DeviceId,
    pub tenant: TenantId,
    /// The gateway that may speak for this device, if any.
    pub gateway: Option<DeviceId>,
}

/// Role of an application (API token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Operator,
    Viewer,
}

/// A program or person holding an API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// Stable and unique per credential (sessions it creates are resumed only by the same one).
    pub token_id: i64,
    pub name: String,
    pub role: Role,
    /// `Some` confines it to one tenant.
    pub tenant: Option<TenantId>,
}

/// Who a credential is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Device(DeviceCaller),
    Application(Application),
}

/// Authentication and the device facts every door needs to decide what a caller may do.
/// Implementations keep their own caches; every method may be called on a connection's task.
///
/// Errors are [`WireError`]s a door maps once: `Unauthenticated` for an unknown or wrong
/// credential, `Forbidden` for a known one that may not act (a quarantined device),
/// `Unavailable` when the registry cannot answer.
#[async_trait]
pub trait Identity: Send + Sync + 'static {
    /// Who `credential` is.
    async fn authenticate(&self, credential: Credential<'_>) -> Result<Caller, WireError>;

    /// The pre-shared key of the device whose PSK identity is `identity`, for a DTLS handshake.
    async fn psk(&self, identity: &str) -> Result<Vec<u8>, WireError>;

    /// Whom `caller` speaks for when it names `device`: itself, or an active child of this
    /// gateway. `Ok(None)` when `device` is neither (the door words the refusal); `Err` when the
    /// child exists but may not send (it is quarantined).
    async fn speaks_for(&self, caller: &DeviceCaller, device: &str) -> Result<Option<DeviceCaller>, WireError>;

    /// The devices a gateway speaks for.
    async fn children_of(&self, gateway: &DeviceId) -> Result<Vec<DeviceId>, WireError>;

    /// The tenant of a registered device, `None` for a name no device has.
    async fn tenant_of(&self, device: &str) -> Result<Option<TenantId>, WireError>;

    /// The device was heard from at `at_ns` (Unix ns): presence, kept in memory and flushed.
    fn heard_from(&self, device: &DeviceId, at_ns: i64);

    /// Devices whose credentials, status or gateway changed: a door drops what it trusted of
    /// them (connections, sessions, observations). A lagged receiver must distrust everyone.
    fn credential_changes(&self) -> broadcast::Receiver<DeviceId>;
}

/// What devices report about themselves besides telemetry.
#[async_trait]
pub trait Reported: Send + Sync + 'static {
    /// Merges `attributes` into the device's attributes: the keys it names are replaced.
    async fn merge_attributes(
        &self,
        device: &DeviceId,
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), WireError>;
}
