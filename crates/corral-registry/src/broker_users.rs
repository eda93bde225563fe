//! Broker users: MQTT clients that are neither a device nor an API token (see
//! [`corral_services::BrokerUsers`]), each with an argon2id password and topic rules.

use crate::RegistryError;
use crate::auth::{API_TOKEN_PREFIX, DEVICE_TOKEN_PREFIX};
use chrono::{DateTime, Utc};
use corral_model::TenantId;
use corral_services::TopicRule;
use serde::Serialize;

/// Rules one broker user may have.
pub const MAX_TOPIC_RULES: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct BrokerUser {
    /// The user name it connects with.
    pub name: String,
    /// The tenant whose messages it is confined to; null: unscoped.
    pub tenant: Option<TenantId>,
    /// The topics it may use.
    pub rules: Vec<TopicRule>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Who created it (a token's or user's name).
    pub created_by: String,
    /// When its password or rules last changed.
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// A user name MQTT clients can send: not `token` (which names an API token) and not a token.
pub(crate) fn check_broker_user_name(name: &str) -> Result<(), RegistryError> {
    crate::users::check_user_name(name)?;
    if name == "token" {
        return Err(RegistryError::BadInput("name: `token` is the user name of API tokens".into()));
    }
    Ok(())
}

/// Broker passwords are usually machine-made, but still guessable if short; and one that looks
/// like a token would be taken for one.
pub(crate) fn check_broker_password(password: &str) -> Result<(), RegistryError> {
    crate::users::check_password(password)?;
    if is_token(password) {
        return Err(RegistryError::BadInput(format!(
            "password: may not start with {DEVICE_TOKEN_PREFIX} or {API_TOKEN_PREFIX} (those are tokens)"
        )));
    }
    Ok(())
}

/// Whether `secret` has a token's prefix: a device's or an application's, never a broker user's.
pub(crate) fn is_token(secret: &str) -> bool {
    secret.starts_with(DEVICE_TOKEN_PREFIX) || secret.starts_with(API_TOKEN_PREFIX)
}

/// Each pattern is an MQTT topic filter once `%u` and `%c` are replaced.
pub(crate) fn check_rules(rules: &[TopicRule]) -> Result<(), RegistryError> {
    if rules.len() > MAX_TOPIC_RULES {
        return Err(RegistryError::BadInput(format!("rules: at most {MAX_TOPIC_RULES}")));
    }
    for (i, rule) in rules.iter().enumerate() {
        let filter = rule.filter_for("user", "client");
        let levels: Vec<&str> = filter.split('/').collect();
        let bad_wildcard = levels.iter().enumerate().any(|(n, level)| {
            (level.contains('#') && (*level != "#" || n + 1 != levels.len())) || (level.contains('+') && *level != "+")
        });
        if rule.pattern.is_empty() || rule.pattern.len() > 256 || rule.pattern.contains('\0') || bad_wildcard {
            return Err(RegistryError::BadInput(format!(
                "rules[{i}].pattern: {:?} is not a topic filter (`+` and `#` take a whole level, `#` only the last; \
                 %u and %c stand for the user name and client id)",
                rule.pattern
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_services::TopicAccess;

    fn rule(pattern: &str) -> TopicRule {
        TopicRule { pattern: pattern.into(), access: TopicAccess::Read }
    }

    #[test]
    fn patterns_are_topic_filters_with_substitutions() {
        for good in ["sensors/%u/#", "+/%c/status", "#", "a/b", "lobby/+/x"] {
            assert!(check_rules(&[rule(good)]).is_ok(), "{good}");
        }
        for bad in ["", "a/#/b", "a+/b", "a/b#", "x\0"] {
            assert!(check_rules(&[rule(bad)]).is_err(), "{bad:?}");
        }
        assert!(check_broker_password("cat_0123456789abcdef").is_err());
        assert!(check_broker_password("a long enough passphrase").is_ok());
        assert!(check_broker_user_name("token").is_err());
    }
}
