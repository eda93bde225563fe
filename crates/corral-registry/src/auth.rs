//! Who may do what: roles, principals, and the secrets that identify them.
//!
//! Secrets are 32 random bytes, hex-encoded with a prefix naming their kind (`cdt_` device token,
//! `cat_` API token) so a leaked string is recognisable in logs and by secret scanners. Only their
//! SHA-256 is stored.

use crate::RegistryError;
use corral_model::TenantId;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

pub const DEVICE_TOKEN_PREFIX: &str = "cdt_";
pub(crate) const API_TOKEN_PREFIX: &str = "cat_";
/// Shortest and longest key accepted. 128 bits is what RFC 7925 (the IoT profile of DTLS) asks
/// as a minimum; 64 bytes is the most OpenSSL and libcoap take.
pub const PSK_MIN_BYTES: usize = 16;
pub const PSK_MAX_BYTES: usize = 64;

/// What an API token may do. Ordered from most to least powerful in the docs, not in `Ord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including API tokens, tenants and profiles.
    Admin,
    /// Reads and writes devices and profiles within its scope.
    Operator,
    /// Reads only.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            other => Err(RegistryError::BadInput(format!("role: {other:?} is not one of admin, operator, viewer"))),
        }
    }
}

/// An authenticated caller of the management API, as resolved from its API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Principal {
    pub token_id: i64,
    pub name: String,
    pub role: Role,
    /// `Some` confines the principal to one tenant: devices of other tenants do not exist for it.
    pub tenant: Option<TenantId>,
}

impl Principal {
    /// The platform acting on its own behalf (bootstrap, the demo fleet, migrations of data):
    /// an unscoped admin with token id 0, recorded as `system` in the audit log.
    pub fn system() -> Principal {
        Principal { token_id: 0, name: "system".to_string(), role: Role::Admin, tenant: None }
    }

    pub fn can_write(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Operator)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn sees_tenant(&self, t: &TenantId) -> bool {
        self.tenant.as_ref().is_none_or(|scope| scope == t)
    }

    pub(crate) fn require_write(&self) -> Result<(), RegistryError> {
        if self.can_write() { Ok(()) } else { Err(RegistryError::Forbidden(format!("role {} may only read", self.role))) }
    }

    pub(crate) fn require_admin(&self) -> Result<(), RegistryError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(RegistryError::Forbidden(format!("role {} may not manage this; admin only", self.role)))
        }
    }

    /// For things shared by every tenant (tenants themselves, profiles): a scoped principal
    /// changing them would reach into other tenants.
    pub(crate) fn require_unscoped(&self, what: &str) -> Result<(), RegistryError> {
        match &self.tenant {
            None => Ok(()),
            Some(t) => Err(RegistryError::Forbidden(format!(
                "{what} are shared by all tenants; a principal scoped to tenant {t} may not change them"
            ))),
        }
    }

    /// The tenant a new object lands in: the requested one, or the principal's scope when none
    /// was requested. A scoped principal asking for another tenant is refused.
    pub(crate) fn resolve_tenant(&self, requested: Option<TenantId>) -> Result<TenantId, RegistryError> {
        match (&self.tenant, requested) {
            (None, Some(t)) => Ok(t),
            (None, None) => Ok(TenantId::default_tenant()),
            (Some(scope), None) => Ok(scope.clone()),
            (Some(scope), Some(t)) if *scope == t => Ok(t),
            (Some(scope), Some(t)) => Err(RegistryError::Forbidden(format!(
                "tenant: this principal is scoped to tenant {scope} and may not act in tenant {t}"
            ))),
        }
    }

    /// The actor's token id as recorded in the audit log; `None` for the platform itself.
    pub(crate) fn audit_token(&self) -> Option<i64> {
        (self.token_id != 0).then_some(self.token_id)
    }
}

/// A fresh secret: the prefix plus 32 bytes from a CSPRNG (`rand::rng()` is ChaCha seeded and
/// periodically reseeded from the OS), as 64 lowercase hex digits.
pub(crate) fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut s = String::with_capacity(prefix.len() + 64);
    s.push_str(prefix);
    push_hex(&mut s, &bytes);
    s
}

/// SHA-256 of a secret, lowercase hex: the only form a secret is ever stored or cached in.
///
/// A fast, unsalted hash is the right tool here, unlike for passwords. Password hashing must be
/// slow because passwords are guessable: an attacker with the table can try the likely ones.
/// These secrets carry 256 bits of randomness, so there is nothing to guess; inverting SHA-256
/// over that space is infeasible however fast each attempt is, and salt would only defeat
/// precomputation, which is equally hopeless at that size. Being fast and deterministic is what
/// lets authentication be a single indexed lookup by hash. (A bootstrap preset chosen by a person
/// is the one exception in entropy; it must be at least 16 characters, and choosing it well is on
/// whoever sets `CORRAL_ADMIN_TOKEN`.)
///
/// Looking up by hash also avoids a timing side channel on the secret: the comparison an index
/// probe makes reveals at most a prefix of the hash, which says nothing about the secret.
pub(crate) fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut s = String::with_capacity(64);
    push_hex(&mut s, &digest);
    s
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_hex() {
        let a = generate_secret(DEVICE_TOKEN_PREFIX);
        let b = generate_secret(DEVICE_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert!(a.starts_with("cdt_"));
        assert!(a[4..].bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn scoped_principals_resolve_to_their_tenant() {
        let acme = TenantId::new("acme").unwrap();
        let p = Principal { token_id: 3, name: "ops".into(), role: Role::Operator, tenant: Some(acme.clone()) };
        assert_eq!(p.resolve_tenant(None).unwrap(), acme);
        assert!(matches!(p.resolve_tenant(Some(TenantId::new("other").unwrap())), Err(RegistryError::Forbidden(_))));
        assert!(p.sees_tenant(&acme));
        assert!(!p.sees_tenant(&TenantId::default_tenant()));
        assert_eq!("viewer".parse::<Role>().unwrap(), Role::Viewer);
        assert!("root".parse::<Role>().is_err());
    }
}
