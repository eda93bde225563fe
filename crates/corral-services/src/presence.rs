//! Whether devices are online: who holds a connection now ([`Connections`], from the doors that
//! keep connections) and when each was last heard from, judged against the offline windows
//! ([`OnlineStatus`], from the rules).

use async_trait::async_trait;

/// What scopes and presence need to know about a device: where it belongs, its attributes, and
/// when it was last heard from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFacts {
    pub id: String,
    pub tenant: String,
    pub profile: Option<String>,
    pub site: Option<String>,
    pub tags: Vec<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// When the platform last heard from it (Unix ns).
    pub last_seen_ns: Option<i64>,
}

/// What the platform knows of a device's live connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connection {
    pub connected: bool,
    /// When its last connection ended (Unix ns), if one did since the server started.
    pub ended_ns: Option<i64>,
}

/// The devices that hold a connection now (MQTT keeps connections; CoAP and HTTP do not).
pub trait Connections: Send + Sync {
    fn connection(&self, device: &str) -> Connection;
}

/// No door keeps connections (MQTT is off).
impl Connections for () {
    fn connection(&self, _device: &str) -> Connection {
        Connection::default()
    }
}

/// Whether each device is online now, in order.
#[async_trait]
pub trait OnlineStatus: Send + Sync {
    async fn online(&self, devices: &[DeviceFacts]) -> Vec<bool>;
}
