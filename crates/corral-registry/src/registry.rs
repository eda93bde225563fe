//! What the registry promises, one trait per concern. Callers (the doors, the REST API, the
//! console, the PKI) hold an `Arc<dyn Registry>` and see only these traits; the SQLite
//! implementation ([`crate::SqliteRegistry`]) keeps its SQL to itself, so a PostgreSQL
//! implementation for cluster mode can be added beside it without touching a caller.
//!
//! Every method that changes something takes the acting [`Principal`], checks its role and
//! tenant scope, and writes its audit row in the same transaction as the change: those are
//! promises of the traits, which any implementation keeps, not details of one of them.
//!
//! | trait | concern |
//! |---|---|
//! | [`DeviceInventory`] | devices: register, read, change, approve, decommission |
//! | [`DeviceSearch`] | pages of devices, a tenant's devices for SQL, a gateway's children |
//! | [`LastSeen`] | when each device was last heard from |
//! | [`DeviceTokens`] | device tokens, and credential changes that end live connections |
//! | [`PreSharedKeys`] | DTLS pre-shared keys |
//! | [`Certificates`] | trusted CAs, device certificates, just-in-time registration |
//! | [`ProfileCatalog`] | device kinds and what they declare |
//! | [`TenantDirectory`] | tenants, the unit of isolation |
//! | [`ApiTokens`] | API tokens with a role and a tenant scope |
//! | [`ConsoleUsers`] | people who sign in to the console, and their sessions |
//! | [`BrokerUserDirectory`] | MQTT clients with a user name, password and topic rules (and the `BrokerUsers` service the MQTT door logs them in through) |
//! | [`AuditTrail`] | who changed what, when |

use crate::{
    ApiToken, AttributeDecl, AuditEntry, BrokerUser, CertificateAuthority, Device, DeviceCertificate, DeviceFilter,
    DeviceIdentity, DevicePage, DevicePatch, NewApiToken, NewCertificateAuthority, NewDevice, NewDeviceCertificate, Principal,
    Profile, RegistryError, Role, Session, Tenant, User,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corral_model::{DeviceId, TenantId};
use serde_json::Value;

/// The whole registry: every concern, plus the end of the process. `serve` opens one and hands
/// it to every room as `Arc<dyn Registry>`.
#[async_trait]
pub trait Registry:
    DeviceInventory
    + DeviceSearch
    + LastSeen
    + DeviceTokens
    + PreSharedKeys
    + Certificates
    + ProfileCatalog
    + TenantDirectory
    + ApiTokens
    + ConsoleUsers
    + BrokerUserDirectory
    + AuditTrail
    + corral_services::Reported
    + corral_ingest::Presence
{
    /// Persists what is still only in memory (`last_seen`) and closes the storage. Called once
    /// at shutdown; calls on any handle afterwards fail.
    async fn close(&self) -> Result<(), RegistryError>;
}

/// The devices themselves: what exists, where it belongs, its status and its gateway.
#[async_trait]
pub trait DeviceInventory: Send + Sync {
    /// Registers a device and returns it with its token, which is shown this once.
    async fn create_device(&self, actor: &Principal, new: NewDevice) -> Result<(Device, String), RegistryError>;

    async fn get_device(&self, actor: &Principal, id: &str) -> Result<Device, RegistryError>;

    /// The id of every device created or moved to another profile, from now on, after the
    /// change committed (what the twins follow). A receiver that lags is told so and should read
    /// every device again; a change made while nobody listened is found the same way.
    fn device_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId>;

    /// Applies a [`DevicePatch`]. Decommissioned devices are frozen (`Conflict`). Setting
    /// `status` to `decommissioned` here is the same as [`DeviceInventory::decommission_device`].
    async fn update_device(&self, actor: &Principal, id: &str, patch: DevicePatch) -> Result<Device, RegistryError>;

    /// Merges what a device reports about itself (MQTT `devices/<id>/attributes`) into its
    /// attributes: reported keys replace the same keys, the others stay.
    async fn merge_attributes(
        &self,
        actor: &Principal,
        id: &str,
        reported: serde_json::Map<String, Value>,
    ) -> Result<Device, RegistryError>;

    /// `DELETE`: the device becomes `decommissioned` and its token is refused from the next
    /// request on; the row stays for history. Decommissioning twice is a no-op.
    async fn decommission_device(&self, actor: &Principal, id: &str) -> Result<Device, RegistryError>;

    /// Approves a device waiting after just-in-time registration: it becomes active.
    async fn approve_device(&self, actor: &Principal, id: &str) -> Result<Device, RegistryError>;

    /// Rejects a device waiting after just-in-time registration: it is decommissioned.
    async fn reject_device(&self, actor: &Principal, id: &str) -> Result<Device, RegistryError>;

    /// Every registered device, decommissioned ones included (they are history, not deletions).
    async fn device_count(&self) -> Result<u64, RegistryError>;
}

/// Finding devices: pages for people, whole tenants for SQL, a gateway's children, a device's
/// tenant.
#[async_trait]
pub trait DeviceSearch: Send + Sync {
    /// One page of the devices the principal may see, matching `filter`, ordered by id.
    /// Cursor pagination (`after` = last id of the previous page) stays correct while devices are
    /// added, unlike offsets. `total` counts all matches across pages.
    async fn list_devices(&self, actor: &Principal, filter: &DeviceFilter) -> Result<DevicePage, RegistryError>;

    /// Every device of `tenant` (`None`: all tenants), decommissioned ones included, ordered by
    /// id, with current `last_seen`: the rows of the SQL `devices` table. The caller has already
    /// resolved what the querying principal may see into `tenant`.
    async fn devices_for_sql(&self, tenant: Option<&TenantId>) -> Result<Vec<Device>, RegistryError>;

    /// The devices that name `gateway` as their gateway and are not decommissioned: those an MQTT
    /// gateway may publish and subscribe for.
    async fn children_of(&self, gateway: &DeviceId) -> Result<Vec<DeviceId>, RegistryError>;

    /// The tenant of a registered device, if there is one.
    async fn tenant_of(&self, device: &str) -> Result<Option<TenantId>, RegistryError>;
}

/// When each device was last heard from: noted in memory on every write, persisted in batches.
#[async_trait]
pub trait LastSeen: Send + Sync {
    /// Records that `device` was heard from at `at`. Memory only; see [`LastSeen::flush_last_seen`].
    fn touch(&self, device: &DeviceId, at: DateTime<Utc>);

    /// Writes the newest in-memory `last_seen` (and API token `last_used_at`) values in one
    /// transaction. Returns how many device rows changed. Values never move backwards.
    async fn flush_last_seen(&self) -> Result<usize, RegistryError>;
}

/// Device tokens, and the announcement every door listens to when a device's credentials stop
/// holding.
#[async_trait]
pub trait DeviceTokens: Send + Sync {
    /// Resolves a device token. Unknown or rotated-away token: `Unauthenticated`; quarantined or
    /// decommissioned device: `Forbidden`, naming the status so the operator knows why.
    async fn authenticate_device(&self, token: &str) -> Result<DeviceIdentity, RegistryError>;

    /// Device ids whose token, status or gateway changed, as they change. Transports holding
    /// long-lived connections (MQTT) disconnect those devices, which must reconnect with
    /// credentials that still hold. A receiver that lags too far skips ahead (and is told so).
    fn credential_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId>;

    /// Issues a new token for the device; the old one stops working at once. The new token is
    /// returned this once. A quarantined device may be rotated (the usual response to a leaked
    /// token), a decommissioned one may not (`Conflict`).
    async fn rotate_device_token(&self, actor: &Principal, id: &str) -> Result<String, RegistryError>;

    /// Rotates a device's token; the old one keeps working `overlap_secs` more (0: it stops at
    /// once), so a fleet can be moved to new tokens without an outage. With an overlap, live
    /// connections stay up; they authenticated with what was valid when they connected.
    async fn rotate_device_token_with_overlap(
        &self,
        actor: &Principal,
        id: &str,
        overlap_secs: u64,
    ) -> Result<String, RegistryError>;
}

/// DTLS pre-shared keys of devices that use CoAP over DTLS.
#[async_trait]
pub trait PreSharedKeys: Send + Sync {
    /// Sets a device's pre-shared key, replacing the one it had: `key` as given, or a random
    /// 128-bit key (as 32 hex characters) when `None`. Returns the key; a generated key is shown this once. Sessions
    /// opened with the old key are told to go.
    async fn set_device_psk(&self, actor: &Principal, id: &str, key: Option<Vec<u8>>) -> Result<Vec<u8>, RegistryError>;

    /// Removes a device's pre-shared key: it can no longer open a DTLS session, and its open
    /// sessions are told to go. `NotFound` when it had none.
    async fn remove_device_psk(&self, actor: &Principal, id: &str) -> Result<(), RegistryError>;

    /// Whether a device has a pre-shared key (never the key itself).
    async fn has_device_psk(&self, actor: &Principal, id: &str) -> Result<bool, RegistryError>;

    /// The key for a DTLS handshake whose PSK identity is `identity`, with the device it
    /// authenticates. Unknown device or no key: `Unauthenticated`; a device that is not active:
    /// `Forbidden`, as for tokens.
    async fn authenticate_psk(&self, identity: &str) -> Result<(DeviceIdentity, Vec<u8>), RegistryError>;
}

/// Certificate authorities a tenant trusts, device certificates, and just-in-time registration by
/// certificate. The cryptography is `corral-pki`'s; the registry keeps the facts.
#[async_trait]
pub trait Certificates: Send + Sync {
    /// Records a CA for a tenant (admin only; a scoped admin for its own tenant). Returns it with
    /// its new id (`ca-` + 12 hex digits).
    async fn add_certificate_authority(
        &self,
        actor: &Principal,
        new: NewCertificateAuthority,
    ) -> Result<CertificateAuthority, RegistryError>;

    /// The CAs the actor may see.
    async fn certificate_authorities(&self, actor: &Principal) -> Result<Vec<CertificateAuthority>, RegistryError>;

    async fn certificate_authority(&self, actor: &Principal, id: &str) -> Result<CertificateAuthority, RegistryError>;

    /// Records a certificate for a device, signed by `new.ca` of the device's tenant.
    /// `issued_by` is the actor's name (a certificate first seen on a connection is recorded by
    /// [`Principal::system`]).
    async fn add_device_certificate(
        &self,
        actor: &Principal,
        device: &str,
        new: NewDeviceCertificate,
    ) -> Result<DeviceCertificate, RegistryError>;

    /// Revokes a device's certificate (by fingerprint or serial): connections using it are
    /// refused from now on, and the device's live connections are told to go.
    async fn revoke_device_certificate(
        &self,
        actor: &Principal,
        device: &str,
        which: &str,
    ) -> Result<DeviceCertificate, RegistryError>;

    /// A device's certificates, newest first.
    async fn device_certificates(&self, actor: &Principal, device: &str) -> Result<Vec<DeviceCertificate>, RegistryError>;

    /// Every device certificate the actor may see (the `certificates` SQL table).
    async fn all_device_certificates(&self, actor: &Principal) -> Result<Vec<(DeviceCertificate, TenantId)>, RegistryError>;

    /// A certificate by fingerprint, whoever's it is (authentication).
    async fn certificate(&self, fingerprint: &str) -> Result<Option<DeviceCertificate>, RegistryError>;

    /// Just-in-time registration: creates `device` in `ca`'s tenant with the CA's profile and
    /// status, as the platform, recorded in the audit log with the CA that vouched for it.
    async fn register_by_certificate(&self, ca: &CertificateAuthority, device: DeviceId) -> Result<Device, RegistryError>;
}

/// Profiles: kinds of device, with the attributes and telemetry fields they declare.
#[async_trait]
pub trait ProfileCatalog: Send + Sync {
    /// Creates or replaces a profile. Operators and admins without a tenant scope.
    async fn put_profile(&self, actor: &Principal, profile: Profile) -> Result<Profile, RegistryError>;

    /// Every profile, by name. Any principal: profiles describe kinds, not anyone's devices.
    async fn list_profiles(&self, actor: &Principal) -> Result<Vec<Profile>, RegistryError>;

    async fn get_profile(&self, actor: &Principal, name: &str) -> Result<Profile, RegistryError>;

    /// The union of all profiles' declared attributes, sorted by name: the typed columns of the
    /// SQL `devices` table. Where profiles disagree on a name's type it becomes `string`, the one
    /// type every value can be shown as; the description kept is the first one found.
    async fn declared_attributes(&self) -> Result<Vec<AttributeDecl>, RegistryError>;
}

/// Tenants: the boundary every scoped principal lives in.
#[async_trait]
pub trait TenantDirectory: Send + Sync {
    /// Creates a tenant. Unscoped admins only: tenants are the boundary scoped principals live in.
    /// An existing id (including one created implicitly by a device) is a `Conflict`.
    async fn create_tenant(&self, actor: &Principal, id: TenantId, name: Option<String>) -> Result<Tenant, RegistryError>;

    /// All tenants for an unscoped principal; a scoped one sees only its own.
    async fn list_tenants(&self, actor: &Principal) -> Result<Vec<Tenant>, RegistryError>;
}

/// API tokens: programs and people on the REST API, each with a role and a tenant scope.
#[async_trait]
pub trait ApiTokens: Send + Sync {
    /// Resolves an API token (the `Bearer` of a management request). Unknown or revoked:
    /// `Unauthenticated`. Also notes the token's use for `last_used_at`.
    async fn authenticate_api(&self, token: &str) -> Result<Principal, RegistryError>;

    /// First start: if no API token exists at all, creates an unscoped admin token named `admin`
    /// with secret `preset` (at least 16 characters, no whitespace or control characters, since it
    /// travels in an HTTP header) or a generated one. Returns the secret only when it created it.
    async fn bootstrap_admin(&self, preset: Option<&str>) -> Result<Option<String>, RegistryError>;

    /// Creates an API token and returns it with its secret, shown this once. Admins only; a
    /// tenant-scoped admin creates tokens in its own tenant only.
    async fn create_api_token(&self, actor: &Principal, new: NewApiToken) -> Result<(ApiToken, String), RegistryError>;

    /// Every API token the admin may manage (a scoped admin: its tenant's), revoked ones included.
    async fn list_api_tokens(&self, actor: &Principal) -> Result<Vec<ApiToken>, RegistryError>;

    /// Revokes an API token; it stops working at once. Revoking a revoked token is a no-op.
    /// The last active unscoped admin token cannot be revoked (`Conflict`): that would lock every
    /// administrator out, with no way back short of editing the database.
    async fn revoke_api_token(&self, actor: &Principal, id: i64) -> Result<(), RegistryError>;
}

/// People who sign in to the console, and their sessions.
#[async_trait]
pub trait ConsoleUsers: Send + Sync {
    /// Creates a user. Admins only; a tenant-scoped admin creates users of its own tenant.
    async fn create_user(
        &self,
        actor: &Principal,
        name: &str,
        password: &str,
        role: Role,
        tenant: Option<TenantId>,
    ) -> Result<User, RegistryError>;

    /// The users the actor may see: all for an unscoped admin, its tenant's for a scoped one.
    async fn list_users(&self, actor: &Principal) -> Result<Vec<User>, RegistryError>;

    /// Sets a user's password (an admin for anyone it may see; a user for itself) and ends the
    /// user's sessions.
    async fn set_user_password(
        &self,
        actor: &Principal,
        name: &str,
        password: &str,
        current: Option<&str>,
    ) -> Result<(), RegistryError>;

    /// Removes a user and its sessions. An admin cannot remove itself (someone must be left to
    /// manage the rest).
    async fn remove_user(&self, actor: &Principal, name: &str) -> Result<(), RegistryError>;

    /// Checks a user name and password and opens a session. A wrong name and a wrong password
    /// give the same answer after the same work, so neither reveals which users exist.
    async fn sign_in(&self, name: &str, password: &str) -> Result<Session, RegistryError>;

    /// The user and CSRF secret of a live session.
    async fn session(&self, secret: &str) -> Result<(Principal, String), RegistryError>;

    /// Ends a session (sign-out). Ending one that is already gone is not an error.
    async fn sign_out(&self, secret: &str) -> Result<(), RegistryError>;
}

/// The audit log, written by every change.
/// MQTT clients that are neither devices nor API tokens. Admins manage them (a tenant-scoped
/// admin, those of its tenant); the MQTT door logs them in through `corral_services::BrokerUsers`.
#[async_trait]
pub trait BrokerUserDirectory: corral_services::BrokerUsers {
    async fn create_broker_user(
        &self,
        actor: &Principal,
        name: &str,
        password: &str,
        tenant: Option<TenantId>,
        rules: Vec<corral_services::TopicRule>,
    ) -> Result<BrokerUser, RegistryError>;

    async fn list_broker_users(&self, actor: &Principal) -> Result<Vec<BrokerUser>, RegistryError>;

    async fn broker_user(&self, actor: &Principal, name: &str) -> Result<BrokerUser, RegistryError>;

    /// Sets a new password, new rules, or both; the user's connections end.
    async fn update_broker_user(
        &self,
        actor: &Principal,
        name: &str,
        password: Option<&str>,
        rules: Option<Vec<corral_services::TopicRule>>,
    ) -> Result<BrokerUser, RegistryError>;

    /// Removes the user; its connections end.
    async fn remove_broker_user(&self, actor: &Principal, name: &str) -> Result<(), RegistryError>;
}

#[async_trait]
pub trait AuditTrail: Send + Sync {
    /// Records an action taken in another room (rules, alarms, the outbox) in the same audit log.
    /// Written after that room's own commit, so a crash between the two can lose the entry.
    async fn record_audit(
        &self,
        actor: &Principal,
        action: &str,
        target: &str,
        tenant: Option<&TenantId>,
        detail: Value,
    ) -> Result<(), RegistryError>;

    /// The newest `limit` audit entries, newest first (`limit` 0 means 100; at most 1000).
    /// Admins only; a tenant-scoped admin sees only entries about its tenant.
    async fn audit_log(&self, actor: &Principal, limit: u32) -> Result<Vec<AuditEntry>, RegistryError>;
}
