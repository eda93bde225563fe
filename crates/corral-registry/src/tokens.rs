//! API tokens as records ([`crate::ApiTokens`]).

use crate::Role;
use chrono::{DateTime, Utc};
use corral_model::TenantId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub tenant: Option<TenantId>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(default, with = "crate::time::rfc3339_opt")]
    #[schemars(with = "corral_model::schema::Rfc3339OrNull")]
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

/// Body of a token creation. `tenant` absent: unscoped, or the creator's scope if it has one.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiToken {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub tenant: Option<TenantId>,
}
