//! API tokens as records ([`crate::ApiTokens`]).

use crate::Role;
use chrono::{DateTime, Utc};
use corral_model::TenantId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiToken {
    /// Its number (`DELETE /api/v1/tokens/{id}`).
    pub id: i64,
    /// A name for people, e.g. what uses it.
    pub name: String,
    pub role: Role,
    /// The tenant it is confined to; null: unscoped (every tenant).
    pub tenant: Option<TenantId>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When it was last used; null: never.
    #[serde(default, with = "crate::time::rfc3339_opt")]
    #[schemars(with = "corral_model::schema::Rfc3339OrNull")]
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked tokens no longer work.
    pub revoked: bool,
}

/// Body of a token creation. `tenant` absent: unscoped, or the creator's scope if it has one.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiToken {
    /// A name for people (at most 64 characters), e.g. what will use it.
    pub name: String,
    pub role: Role,
    /// The tenant it is confined to.
    #[serde(default)]
    pub tenant: Option<TenantId>,
}
