//! An entry of the audit log ([`crate::AuditTrail`]).

use chrono::{DateTime, Utc};
use corral_model::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One change: who, what, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub at: DateTime<Utc>,
    /// The principal's name, `system` for the platform itself.
    pub actor: String,
    /// The actor's API token id; `None` for the platform.
    pub actor_token: Option<i64>,
    /// `device.create`, `device.update`, `device.decommission`, `device.rotate_token`,
    /// `token.create`, `token.revoke`, `profile.put`, `profile.create` (implicit),
    /// `tenant.create`.
    pub action: String,
    /// What was changed: a device id, an API token id, a profile name or a tenant id.
    pub target: String,
    /// The tenant the target belongs to; `None` for things shared by all tenants.
    pub tenant: Option<TenantId>,
    /// Specifics of the change. Never contains a secret.
    pub detail: Value,
}
