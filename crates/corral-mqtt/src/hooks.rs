//! The seam between the broker and the platform: who a client is, what happens to platform
//! publishes, and connection lifecycle notifications. The broker knows nothing of storage; the
//! binary implements [`BrokerHooks`] on top of the registry and the ingest pipeline.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::codec::{ProtocolVersion, QoS, ReasonCode};
use crate::topic::PlatformTopic;

/// Role of an application (API token) identity: the platform's roles.
pub use corral_services::Role;

/// Who a connected client is, as decided by [`BrokerHooks::authenticate`]. Drives the ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A device; `children` are the devices this gateway may speak for.
    Device { id: String, tenant: String, children: Vec<String> },
    /// A program or person holding an API token.
    Application {
        name: String,
        /// A stable key unique to the credential (e.g. `token:42`): a session it creates is
        /// resumed only by the same credential.
        principal: String,
        role: Role,
        /// `Some` limits what it receives (and may command) to that tenant.
        tenant: Option<String>,
    },
    /// A broker user (neither a device nor an API token): its topic rules, `%u` and `%c`
    /// already replaced by its name and client id.
    User {
        name: String,
        /// `Some` confines what it receives to that tenant's messages.
        tenant: Option<String>,
        /// Filters it may receive messages on, and publish to.
        read: Arc<[String]>,
        write: Arc<[String]>,
    },
    /// Only when `BrokerConfig::allow_anonymous` is on and the client sent no credential that
    /// names anyone.
    Anonymous,
}

impl Identity {
    /// The tenant messages published by this identity carry (`None` for unscoped ones).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Identity::Device { tenant, .. } => Some(tenant),
            Identity::Application { tenant, .. } | Identity::User { tenant, .. } => tenant.as_deref(),
            Identity::Anonymous => None,
        }
    }

    /// Who owns the sessions this identity creates: only the same principal resumes or takes
    /// over one of them (see `BrokerState::attach`).
    pub fn principal(&self) -> String {
        match self {
            Identity::Device { id, .. } => format!("device:{id}"),
            Identity::Application { principal, .. } => format!("application:{principal}"),
            Identity::User { name, .. } => format!("user:{name}"),
            Identity::Anonymous => "anonymous".to_string(),
        }
    }

    /// The device whose [`principal`](Self::principal) this is (`device:<id>`), if a device's.
    pub(crate) fn device_of_principal(principal: &str) -> Option<&str> {
        principal.strip_prefix("device:")
    }
}

/// What [`BrokerHooks::authenticate`] gets to decide on.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub protocol: ProtocolVersion,
    pub peer_addr: SocketAddr,
    /// Label given to `serve_connection` ("tcp", "ws", "tls", ...).
    pub transport: &'static str,
    /// True when the broker assigned the client id (the client sent an empty one).
    pub client_id_assigned: bool,
    /// The client certificate (DER) the TLS layer verified, on an mTLS connection.
    pub certificate: Option<Vec<u8>>,
}

/// Why a CONNECT is refused; maps to the CONNACK code of either protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    /// v5 0x86, v3 4
    #[error("bad user name or password")]
    BadCredentials,
    /// v5 0x87, v3 5
    #[error("not authorized")]
    NotAuthorized,
    /// v5 0x85, v3 2
    #[error("client identifier not valid")]
    ClientIdNotValid,
    /// v5 0x88, v3 3
    #[error("server unavailable")]
    ServerUnavailable,
    /// v5 0x8A, v3 5
    #[error("banned")]
    Banned,
    /// A broker user's password is wrong: v5 0x86, v3 4, and refused even in open mode (where
    /// a credential that names no one is let in as anonymous).
    #[error("wrong password")]
    WrongPassword,
}

impl ConnectRefusal {
    pub fn reason_code(self) -> ReasonCode {
        match self {
            ConnectRefusal::BadCredentials | ConnectRefusal::WrongPassword => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ConnectRefusal::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            ConnectRefusal::ClientIdNotValid => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            ConnectRefusal::ServerUnavailable => ReasonCode::SERVER_UNAVAILABLE,
            ConnectRefusal::Banned => ReasonCode::BANNED,
        }
    }
}

/// Why the platform did not accept a platform publish. The reason code goes into the v5
/// PUBACK/PUBREC; 3.1.1 QoS 1/2 publishers are disconnected instead (no negative ack exists).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (reason {reason})")]
pub struct PublishRefusal {
    /// An MQTT 5 PUBACK reason: 0x99 payload format invalid, 0x97 quota exceeded, 0x80 ...
    pub reason: ReasonCode,
    /// For the log (never sent to the client).
    pub message: String,
}

impl PublishRefusal {
    pub fn new(reason: ReasonCode, message: impl Into<String>) -> Self {
        PublishRefusal { reason, message: message.into() }
    }
}

/// The durable part of a platform publish ([`BrokerHooks::on_platform_publish`]): resolves once
/// the message is durable, or with the refusal the publisher gets.
pub type PlatformWrite = futures::future::BoxFuture<'static, Result<(), PublishRefusal>>;

/// A PUBLISH on a platform topic, handed to [`BrokerHooks::on_platform_publish`].
#[derive(Debug, Clone)]
pub struct InboundPublish {
    pub client_id: Arc<str>,
    pub topic: Arc<str>,
    /// The `<id>` of `devices/<id>/...` (the publisher itself or one of a gateway's children).
    pub device: String,
    pub kind: PlatformTopic,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 content type, if the client set one.
    pub content_type: Option<String>,
    pub user_properties: Vec<(String, String)>,
}

/// How a client's connection ended, for [`BrokerHooks::on_disconnected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectKind {
    /// DISCONNECT with reason 0x00: no will.
    Clean,
    /// Ended without a clean DISCONNECT (or with v5 0x04); the will, if any, was published
    /// or scheduled.
    Will,
    /// Keep-alive expired.
    Timeout,
    /// Another connection with the same client id took the session over.
    Takeover,
    /// The platform disconnected it (`kick_device`, `disconnect_client_where`) or the broker
    /// stopped.
    Kicked,
    /// Protocol violation (malformed packet, ...).
    ProtocolError,
}

/// The answer of [`BrokerHooks::resolve_device_tenant`]: the device's tenant, `None` for a name
/// no device has.
pub type TenantLookup = futures::future::BoxFuture<'static, Option<String>>;

/// What the platform plugs into the broker. Implementations must be cheap to call: `device_tenant`
/// and the notifications run on connection tasks, which they must never block.
#[async_trait]
pub trait BrokerHooks: Send + Sync + 'static {
    /// Decides who a CONNECT is (called for every CONNECT unless anonymous access applies).
    async fn authenticate(&self, request: &ConnectRequest) -> Result<Identity, ConnectRefusal>;

    /// A PUBLISH on a platform topic that passed the ACL, called on the connection's task: check
    /// and decode it here. `Err` means the message is neither routed nor stored. `Ok` carries the
    /// write that makes it durable; the broker acknowledges (PUBACK/PUBREC) only once that write
    /// resolved `Ok`, in the order the publishes arrived.
    ///
    /// QoS 0 and 1 messages are routed to subscribers as soon as they are accepted here, without
    /// waiting for the write: a crash before it finishes leaves the publisher unacknowledged, so
    /// it sends again and "at least once" holds. QoS 2 messages are routed only after the write,
    /// so that resend cannot deliver a second copy.
    fn on_platform_publish(&self, who: &Identity, publish: &InboundPublish) -> Result<PlatformWrite, PublishRefusal>;

    /// The tenant of a device as far as it is known without waiting (a cache, a table in
    /// memory), for tenant-scoped applications publishing to `devices/<id>/...` and for tagging
    /// messages on such topics. `None` = not known now: the broker then awaits
    /// [`resolve_device_tenant`](Self::resolve_device_tenant).
    fn device_tenant(&self, device: &str) -> Option<String>;

    /// The tenant of a device, asking whoever knows (the registry) when
    /// [`device_tenant`](Self::device_tenant) did not. `None` = unknown device. The connection
    /// awaits it in arrival order, so the publish that needs it, and every later one, is routed
    /// and acknowledged after it, as if the answer had been at hand.
    ///
    /// The default answers what `device_tenant` knows, for hooks that hold every device's tenant
    /// in memory.
    fn resolve_device_tenant(&self, device: &str) -> TenantLookup {
        let tenant = self.device_tenant(device);
        Box::pin(async move { tenant })
    }

    fn on_connected(&self, _who: &Identity, _client_id: &str) {}

    /// The session of `client_id` subscribes to `filters` now: those a SUBSCRIBE was granted
    /// (called after its SUBACK), or, with `resumed`, those a session resumed on CONNECT had
    /// already (called before its CONNACK is sent, after `on_connected`). The platform learns
    /// here that a device can take what it subscribes to, such as its commands.
    fn on_subscribed(&self, _who: &Identity, _client_id: &str, _filters: &[String], _resumed: bool) {}

    fn on_disconnected(&self, _who: &Identity, _client_id: &str, _how: DisconnectKind) {}
}

/// The tenant of `device`: `hooks`' answer at hand, else awaited from them (see
/// [`BrokerHooks::resolve_device_tenant`]).
pub(crate) async fn device_tenant(hooks: &dyn BrokerHooks, device: &str) -> Option<String> {
    match hooks.device_tenant(device) {
        Some(tenant) => Some(tenant),
        None => hooks.resolve_device_tenant(device).await,
    }
}
