//! Tenants ([`crate::TenantDirectory`]): the unit of isolation between lines of business or customers.

use chrono::{DateTime, Utc};
use corral_model::TenantId;
use serde::{Deserialize, Serialize};

/// A tenant: an id, a display name, when it was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Tenant {
    pub id: TenantId,
    /// A display name; null when none was given (or the tenant was created implicitly).
    pub name: Option<String>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub created_at: DateTime<Utc>,
}
