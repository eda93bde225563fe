//! Broker users: MQTT clients that are neither a registered device nor an application with an
//! API token — a gateway, a dashboard, a bridge from another broker — each with a user name, a
//! password and the topics it may use, as Mosquitto's password file and ACL patterns give them.

use corral_model::{TenantId, WireError};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// What a topic rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TopicAccess {
    /// Receive messages on matching topics.
    Read,
    /// Publish to matching topics.
    Write,
    /// Both.
    Readwrite,
}

impl TopicAccess {
    pub fn reads(self) -> bool {
        matches!(self, TopicAccess::Read | TopicAccess::Readwrite)
    }
    pub fn writes(self) -> bool {
        matches!(self, TopicAccess::Write | TopicAccess::Readwrite)
    }
}

/// One rule: an MQTT topic filter (`+`, `#`) in which `%u` stands for the user's name and `%c`
/// for the client id it connects with, as in Mosquitto's `pattern` lines and EMQX's ACLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    pub pattern: String,
    pub access: TopicAccess,
}

impl TopicRule {
    /// The filter this rule is for a client: `%u` and `%c` replaced.
    pub fn filter_for(&self, user: &str, client_id: &str) -> String {
        self.pattern.replace("%u", user).replace("%c", client_id)
    }
}

/// A broker user who proved its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerLogin {
    pub name: String,
    /// Confines it to one tenant's messages, like a tenant-scoped API token.
    pub tenant: Option<TenantId>,
    pub rules: Vec<TopicRule>,
}

/// Where the MQTT door checks a broker user's password.
#[async_trait::async_trait]
pub trait BrokerUsers: Send + Sync + 'static {
    /// `Ok(None)`: no broker user has this name, or `password` is a token (a device's or an
    /// application's, which log in as themselves), answered without a lookup. A wrong password
    /// is an `Unauthenticated` error; it takes as long as a right one.
    async fn log_in(&self, name: &str, password: &str) -> Result<Option<BrokerLogin>, WireError>;

    /// Names of broker users whose password or rules changed, or who were removed: their
    /// connections must end. A lagged receiver must disconnect every broker user.
    fn broker_user_changes(&self) -> broadcast::Receiver<String>;
}
