//! Device twins as a door sees them: the device's side of the twin protocol, one shape for MQTT
//! and CoAP, so a door only moves bytes between a device and [`DeviceTwins`].
//!
//! The payloads are JSON and defined by the implementation (`corral-twin`, documented in
//! `docs/twin.md`): a door does not parse them, it only knows which topic or resource carries
//! which of them.

use async_trait::async_trait;
use bytes::Bytes;
use corral_model::{DeviceId, TenantId, WireError};
use tokio::sync::broadcast;

/// A device's desired document as the device receives it, with its version (the bytes are
/// `{"version": N, "desired": {...}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredMessage {
    pub device: DeviceId,
    pub tenant: TenantId,
    pub version: u64,
    pub payload: Bytes,
}

/// A desired document changed, durably: `version` is its new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNotice {
    pub device: DeviceId,
    pub version: u64,
}

/// A device's reported document changed, durably, by `patch` (the merge patch it sent, or the
/// platform wrote): what rooms that follow devices' reports (campaigns) listen to.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedNotice {
    pub device: DeviceId,
    pub version: u64,
    pub patch: std::sync::Arc<serde_json::Map<String, serde_json::Value>>,
}

/// The twin protocol, device side.
#[async_trait]
pub trait DeviceTwins: Send + Sync + 'static {
    /// Merges a device's reported patch (RFC 7386, the JSON object it sent). Durable when it
    /// returns `Ok`, so the door may acknowledge; on `Err` nothing was stored.
    async fn report(&self, device: &DeviceId, patch: &[u8]) -> Result<(), WireError>;

    /// The device's desired document now.
    async fn desired(&self, device: &DeviceId) -> Result<DesiredMessage, WireError>;

    /// Answers a device's `get`: an empty request or `{}` is answered with the whole twin,
    /// `{"since": N}` with the desired changes since version N.
    async fn get(&self, device: &DeviceId, request: &[u8]) -> Result<Bytes, WireError>;

    /// Every durable desired change from now on. Subscribe before reading documents and ignore
    /// notices at or below a version already read; after `Lagged`, read them all again
    /// ([`desired_page`](Self::desired_page)).
    fn desired_changes(&self) -> broadcast::Receiver<DesiredNotice>;

    /// Up to `limit` devices' desired documents in device order after `after`: a door that
    /// keeps every device's document at hand (the MQTT broker's retained messages) reads them
    /// all at start and after it lagged.
    async fn desired_page(&self, after: Option<&DeviceId>, limit: usize) -> Result<Vec<DesiredMessage>, WireError>;
}
