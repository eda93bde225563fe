//! Device lifecycle in SQLite: register, read, patch, approve, decommission.
//!
//! Each mutation runs in one write transaction with its audit row, and drops the device's entries
//! from the authentication cache after committing, so a changed status or gateway takes effect
//! at the very next request.

use super::SqliteRegistry;
use super::audit;
use super::profiles::ensure_profile;
use super::tenants::ensure_tenant;
use crate::auth::{DEVICE_TOKEN_PREFIX, generate_secret, hash_secret};
use crate::device::{attributes_json, check_name, check_site, normalize_tags};
use crate::registry::DeviceInventory;
use crate::time::{from_ms, now_ms};
use crate::{Device, DevicePatch, DeviceStatus, NewDevice, Principal, RegistryError};
use async_trait::async_trait;
use corral_model::{DeviceId, TenantId};
use serde_json::json;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use std::fmt;

pub(crate) const DEVICE_COLUMNS: &str =
    "id, profile, tenant, site, attributes, tags, status, gateway, last_seen, created_at, updated_at";

pub(crate) fn device_from_row(row: &SqliteRow) -> Result<Device, RegistryError> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: &str, e: &dyn fmt::Display| RegistryError::storage(format!("device {id:?}: {what}: {e}"));
    let attributes: String = row.try_get("attributes")?;
    let tags: String = row.try_get("tags")?;
    let status: String = row.try_get("status")?;
    let tenant: String = row.try_get("tenant")?;
    let gateway: Option<String> = row.try_get("gateway")?;
    Ok(Device {
        id: DeviceId::new(id.clone()).map_err(|e| corrupt("id", &e))?,
        profile: row.try_get("profile")?,
        tenant: TenantId::new(tenant).map_err(|e| corrupt("tenant", &e))?,
        site: row.try_get("site")?,
        attributes: serde_json::from_str(&attributes).map_err(|e| corrupt("attributes", &e))?,
        tags: serde_json::from_str(&tags).map_err(|e| corrupt("tags", &e))?,
        status: status.parse().map_err(|e| corrupt("status", &e))?,
        gateway: gateway.map(DeviceId::new).transpose().map_err(|e| corrupt("gateway", &e))?,
        last_seen: row.try_get::<Option<i64>, _>("last_seen")?.map(from_ms),
        created_at: from_ms(row.try_get("created_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
    })
}

/// How far up a gateway chain the loop check walks. Real chains are one or two hops deep.
const MAX_GATEWAY_DEPTH: usize = 32;

async fn fetch(conn: &mut SqliteConnection, id: &str) -> Result<Option<Device>, RegistryError> {
    let row = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?")).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(device_from_row).transpose()
}

/// The device if the principal may see it. Another tenant's device is reported exactly like a
/// missing one, so a scoped principal cannot probe for ids it does not own.
pub(crate) async fn fetch_visible(conn: &mut SqliteConnection, actor: &Principal, id: &str) -> Result<Device, RegistryError> {
    match fetch(conn, id).await? {
        Some(d) if actor.sees_tenant(&d.tenant) => Ok(d),
        _ => Err(RegistryError::not_found("device", id)),
    }
}

/// A gateway must be a live device of the same tenant, and must not lead back to the device.
async fn check_gateway(
    conn: &mut SqliteConnection,
    device: &DeviceId,
    gateway: &DeviceId,
    tenant: &TenantId,
) -> Result<(), RegistryError> {
    if gateway == device {
        return Err(RegistryError::BadInput("gateway: a device cannot be its own gateway".into()));
    }
    let gw = match fetch(conn, gateway.as_str()).await? {
        Some(gw) if gw.tenant == *tenant => gw,
        // Same message for "missing" and "other tenant": the latter must not leak.
        _ => return Err(RegistryError::BadInput(format!("gateway: no device {gateway} in tenant {tenant}"))),
    };
    if gw.status == DeviceStatus::Decommissioned {
        return Err(RegistryError::BadInput(format!("gateway: device {gateway} is decommissioned")));
    }
    let mut next = gw.gateway;
    for _ in 0..MAX_GATEWAY_DEPTH {
        let Some(hop) = next else { return Ok(()) };
        if hop == *device {
            return Err(RegistryError::BadInput(format!(
                "gateway: {gateway} is already served through {device}; that would make a loop"
            )));
        }
        next = sqlx::query("SELECT gateway FROM devices WHERE id = ?")
            .bind(hop.as_str())
            .fetch_optional(&mut *conn)
            .await?
            .and_then(|r| r.try_get::<Option<String>, _>("gateway").ok().flatten())
            .and_then(|g| DeviceId::new(g).ok());
    }
    Err(RegistryError::BadInput(format!("gateway: chain above {gateway} is deeper than {MAX_GATEWAY_DEPTH}")))
}

pub(crate) fn refuse_decommissioned(d: &Device) -> Result<(), RegistryError> {
    if d.status == DeviceStatus::Decommissioned {
        return Err(RegistryError::Conflict(format!("device {} is decommissioned and can no longer change", d.id)));
    }
    Ok(())
}

#[async_trait]
impl DeviceInventory for SqliteRegistry {
    async fn approve_device(&self, actor: &Principal, id: &str) -> Result<Device, RegistryError> {
        self.decide_pending(actor, id, DeviceStatus::Active).await
    }

    async fn reject_device(&self, actor: &Principal, id: &str) -> Result<Device, RegistryError> {
        self.decide_pending(actor, id, DeviceStatus::Decommissioned).await
    }

    async fn create_device(&self, actor: &Principal, new: NewDevice) -> Result<(Device, String), RegistryError> {
        self.insert_device(actor, new, DeviceStatus::Active).await
    }

    fn device_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId> {
        self.inner.device_changes.subscribe()
    }

    async fn get_device(&self, actor: &Principal, id: &str) -> Result<Device, RegistryError> {
        let mut conn = self.pool().acquire().await?;
        let mut device = fetch_visible(&mut conn, actor, id).await?;
        self.inner.presence.merge_into(&mut device);
        Ok(device)
    }

    async fn update_device(&self, actor: &Principal, id: &str, patch: DevicePatch) -> Result<Device, RegistryError> {
        self.write_update(actor, id, patch, None).await
    }

    async fn merge_attributes(
        &self,
        actor: &Principal,
        id: &str,
        reported: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Device, RegistryError> {
        // Read and written in one transaction: a read before it would lose a merge made between.
        self.write_update(actor, id, DevicePatch::default(), Some(reported)).await
    }

    async fn decommission_device(&self, actor: &Principal, id: &str) -> Result<Device, RegistryError> {
        let patch = DevicePatch { status: Some(DeviceStatus::Decommissioned), ..DevicePatch::default() };
        match self.update_device(actor, id, patch).await {
            Err(RegistryError::Conflict(_)) => self.get_device(actor, id).await,
            other => other,
        }
    }

    async fn device_count(&self) -> Result<u64, RegistryError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM devices").fetch_one(self.pool()).await?.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

impl SqliteRegistry {
    /// [`DeviceInventory::update_device`], and with `merge` the attributes as they are in the
    /// transaction, extended by `merge` (so two merges at once both land).
    async fn write_update(
        &self,
        actor: &Principal,
        id: &str,
        mut patch: DevicePatch,
        merge: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Device, RegistryError> {
        actor.require_write()?;
        // Pure validation first, so bad input never waits for the write lock.
        if let Some(Some(p)) = &patch.profile {
            check_name("profile", p, 64)?;
        }
        if let Some(Some(s)) = &patch.site {
            check_site(s)?;
        }
        if let Some(a) = &patch.attributes {
            attributes_json(a)?;
        }
        let tags = patch.tags.map(normalize_tags).transpose()?;

        let mut tx = self.write_tx().await?;
        let mut d = fetch_visible(&mut tx, actor, id).await?;
        refuse_decommissioned(&d)?;
        if let Some(merge) = merge {
            let mut attributes = d.attributes.clone();
            attributes.extend(merge);
            patch.attributes = Some(attributes);
        }
        let mut changed: Vec<&str> = Vec::new();
        if let Some(profile) = patch.profile
            && profile != d.profile
        {
            if let Some(p) = &profile {
                ensure_profile(&mut tx, actor, p).await?;
            }
            d.profile = profile;
            changed.push("profile");
        }
        if let Some(site) = patch.site
            && site != d.site
        {
            d.site = site;
            changed.push("site");
        }
        if let Some(attributes) = patch.attributes
            && attributes != d.attributes
        {
            d.attributes = attributes;
            changed.push("attributes");
        }
        if let Some(tags) = tags
            && tags != d.tags
        {
            d.tags = tags;
            changed.push("tags");
        }
        let old_gateway = d.gateway.clone();
        if let Some(gateway) = patch.gateway
            && gateway != d.gateway
        {
            if let Some(gw) = &gateway {
                check_gateway(&mut tx, &d.id, gw, &d.tenant).await?;
            }
            d.gateway = gateway;
            changed.push("gateway");
        }
        if patch.status == Some(DeviceStatus::PendingApproval) && d.status != DeviceStatus::PendingApproval {
            return Err(RegistryError::BadInput("status pending-approval is set only by just-in-time registration".into()));
        }
        if let Some(status) = patch.status
            && status != d.status
        {
            d.status = status;
            changed.push("status");
        }
        if changed.is_empty() {
            drop(tx);
            self.inner.presence.merge_into(&mut d);
            return Ok(d);
        }
        let now = now_ms();
        let attributes_text = attributes_json(&d.attributes)?;
        sqlx::query(
            "UPDATE devices SET profile = ?, site = ?, attributes = ?, tags = ?, status = ?, gateway = ?, \
             updated_at = ? WHERE id = ?",
        )
        .bind(d.profile.as_deref())
        .bind(d.site.as_deref())
        .bind(attributes_text)
        .bind(serde_json::to_string(&d.tags).map_err(|e| RegistryError::storage(e.to_string()))?)
        .bind(d.status.as_str())
        .bind(d.gateway.as_ref().map(DeviceId::as_str))
        .bind(now)
        .bind(d.id.as_str())
        .execute(&mut *tx)
        .await?;
        let action = if d.status == DeviceStatus::Decommissioned { "device.decommission" } else { "device.update" };
        let detail = json!({"changed": changed, "status": d.status});
        audit::record(&mut tx, actor, action, d.id.as_str(), Some(&d.tenant), detail).await?;
        tx.commit().await?;
        self.forget_device(&d.id);
        if changed.contains(&"profile") {
            self.device_changed(&d.id);
        }
        if changed.iter().any(|c| *c == "status" || *c == "gateway") {
            self.credentials_changed(&d.id);
        }
        if changed.contains(&"gateway") {
            // Both gateways' lists of devices they speak for changed.
            for gateway in old_gateway.iter().chain(&d.gateway) {
                self.credentials_changed(gateway);
            }
        }
        d.updated_at = from_ms(now);
        self.inner.presence.merge_into(&mut d);
        Ok(d)
    }

    async fn decide_pending(&self, actor: &Principal, id: &str, status: DeviceStatus) -> Result<Device, RegistryError> {
        let d = self.get_device(actor, id).await?;
        if d.status != DeviceStatus::PendingApproval {
            return Err(RegistryError::Conflict(format!("device {id} is {}, not pending-approval", d.status)));
        }
        let patch = DevicePatch { status: Some(status), ..DevicePatch::default() };
        self.update_device(actor, id, patch).await
    }

    /// [`DeviceInventory::create_device`] with the status it starts in (just-in-time registration
    /// may start a device pending approval, in the same write).
    pub(crate) async fn insert_device(
        &self,
        actor: &Principal,
        new: NewDevice,
        status: DeviceStatus,
    ) -> Result<(Device, String), RegistryError> {
        actor.require_write()?;
        let tenant = actor.resolve_tenant(new.tenant)?;
        if let Some(p) = &new.profile {
            check_name("profile", p, 64)?;
        }
        if let Some(s) = &new.site {
            check_site(s)?;
        }
        let tags = normalize_tags(new.tags.unwrap_or_default())?;
        let attributes = new.attributes.unwrap_or_default();
        let attributes_text = attributes_json(&attributes)?;
        let token = generate_secret(DEVICE_TOKEN_PREFIX);
        let now = now_ms();

        let mut tx = self.write_tx().await?;
        if fetch(&mut tx, new.id.as_str()).await?.is_some() {
            return Err(RegistryError::Conflict(format!("device {} already exists", new.id)));
        }
        ensure_tenant(&mut tx, actor, &tenant).await?;
        if let Some(p) = &new.profile {
            ensure_profile(&mut tx, actor, p).await?;
        }
        if let Some(gw) = &new.gateway {
            check_gateway(&mut tx, &new.id, gw, &tenant).await?;
        }
        sqlx::query(
            "INSERT INTO devices (id, profile, tenant, site, attributes, tags, status, gateway, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?9, ?7, ?8, ?8)",
        )
        .bind(new.id.as_str())
        .bind(new.profile.as_deref())
        .bind(tenant.as_str())
        .bind(new.site.as_deref())
        .bind(&attributes_text)
        .bind(serde_json::to_string(&tags).map_err(|e| RegistryError::storage(e.to_string()))?)
        .bind(new.gateway.as_ref().map(DeviceId::as_str))
        .bind(now)
        .bind(status.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO device_tokens (hash, device_id, created_at) VALUES (?, ?, ?)")
            .bind(hash_secret(&token))
            .bind(new.id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let detail = json!({"profile": new.profile, "site": new.site, "gateway": new.gateway, "tags": tags, "status": status});
        audit::record(&mut tx, actor, "device.create", new.id.as_str(), Some(&tenant), detail).await?;
        tx.commit().await?;
        self.device_changed(&new.id);
        if let Some(gateway) = &new.gateway {
            self.credentials_changed(gateway); // it now speaks for one more device
        }

        let device = Device {
            id: new.id,
            profile: new.profile,
            tenant,
            site: new.site,
            attributes,
            tags,
            status,
            gateway: new.gateway,
            last_seen: None,
            created_at: from_ms(now),
            updated_at: from_ms(now),
        };
        Ok((device, token))
    }
}

/// `devices/<id>/attributes` and the like: what a device says about itself, merged as the
/// platform (the device's own credential was checked by its door).
#[async_trait::async_trait]
impl corral_services::Reported for SqliteRegistry {
    async fn merge_attributes(
        &self,
        device: &DeviceId,
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), corral_model::WireError> {
        DeviceInventory::merge_attributes(self, &Principal::system(), device.as_str(), attributes)
            .await
            .map(drop)
            .map_err(|e| e.to_wire())
    }
}
