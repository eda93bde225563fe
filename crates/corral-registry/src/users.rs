//! People who sign in to the console: user accounts with a password, the same roles and tenant
//! scope as API tokens, and their sessions.
//!
//! Passwords are hashed with argon2id (a slow, memory-hard hash: unlike tokens, passwords are
//! guessable). A session carries a CSRF secret that the console's forms and requests must echo.

use crate::device::check_text;
use crate::{Principal, RegistryError, Role};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use corral_model::TenantId;
use serde::Serialize;

/// Shortest password accepted: length is what makes a password hard to guess.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// How long a session lasts from sign-in, whatever happens meanwhile.
pub const SESSION_HOURS: i64 = 12;
pub(crate) const SESSION_PREFIX: &str = "cus_";

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct User {
    /// The name to sign in with.
    pub name: String,
    pub role: Role,
    /// The tenant the user is confined to; null: unscoped (every tenant).
    pub tenant: Option<TenantId>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Who created it (a token's or user's name).
    pub created_by: String,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub password_changed_at: DateTime<Utc>,
}

/// A signed-in user's session: the secret for the cookie (shown once) and the CSRF secret.
#[derive(Debug, Clone)]
pub struct Session {
    pub secret: String,
    pub csrf: String,
    pub principal: Principal,
    pub expires_at: DateTime<Utc>,
}

pub(crate) fn check_password(password: &str) -> Result<(), RegistryError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(RegistryError::BadInput(format!("password: at least {MIN_PASSWORD_CHARS} characters")));
    }
    if password.chars().count() > 1024 {
        return Err(RegistryError::BadInput("password: at most 1024 characters".into()));
    }
    Ok(())
}

pub(crate) fn check_user_name(name: &str) -> Result<(), RegistryError> {
    check_text("name", name, 64)?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c)) {
        return Err(RegistryError::BadInput("name: letters, digits and . _ @ - only".into()));
    }
    Ok(())
}

/// argon2id with the crate's defaults (19 MiB, 2 passes: OWASP's recommendation), off the async
/// threads: a hash takes tens of milliseconds by design.
pub(crate) async fn hash_password(password: &str) -> Result<String, RegistryError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
        argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| RegistryError::storage(format!("hashing a password: {e}")))?
    .map_err(|e| RegistryError::storage(format!("hashing a password: {e}")))
}

pub(crate) async fn verify_password(password: &str, stored: String) -> bool {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored).is_ok_and(|hash| argon2::Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// How a signed-in user appears to the rest of the platform: a principal without a token.
pub(crate) fn user_principal(user: &User) -> Principal {
    Principal { token_id: 0, name: user.name.clone(), role: user.role, tenant: user.tenant.clone() }
}

/// A random password for a new user or a reset: 20 characters from an alphabet without look-alikes
/// (about 114 bits), for an operator to hand over and the user to change.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..20).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}
