//! Certificate authorities and device certificates as records: which CAs a tenant trusts, which
//! certificate belongs to which device, which are revoked, and who did each. The cryptography is
//! `corral-pki`'s; the registry only keeps the facts.

use super::SqliteRegistry;
use super::audit;
use super::devices::{fetch_visible, refuse_decommissioned};
use super::tenants::ensure_tenant;
use crate::registry::{AuditTrail, Certificates};
use crate::time::{from_ms, now_ms};
use crate::{
    CertificateAuthority, Device, DeviceCertificate, DeviceStatus, NewCertificateAuthority, NewDevice, NewDeviceCertificate,
    Principal, RegistryError,
};
use async_trait::async_trait;
use corral_model::{DeviceId, TenantId};
use serde_json::json;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

const CA_COLUMNS: &str = "id, tenant, name, cert_pem, subject, fingerprint, managed, not_after, created_at, created_by, \
                          auto_register, register_profile, register_status";
const CERT_COLUMNS: &str =
    "fingerprint, serial, device_id, ca_id, not_before, not_after, issued_at, issued_by, revoked_at, revoked_by";

fn ca_from_row(row: &SqliteRow) -> Result<CertificateAuthority, RegistryError> {
    let tenant: String = row.try_get("tenant")?;
    Ok(CertificateAuthority {
        id: row.try_get("id")?,
        tenant: TenantId::new(tenant).map_err(|e| RegistryError::storage(format!("CA tenant: {e}")))?,
        name: row.try_get("name")?,
        managed: row.try_get::<i64, _>("managed")? != 0,
        subject: row.try_get("subject")?,
        fingerprint: row.try_get("fingerprint")?,
        not_after: from_ms(row.try_get("not_after")?),
        created_at: from_ms(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
        certificate: row.try_get("cert_pem")?,
        auto_register: row.try_get::<i64, _>("auto_register")? != 0,
        register_profile: row.try_get("register_profile")?,
        register_status: row.try_get::<String, _>("register_status")?.parse()?,
    })
}

fn cert_from_row(row: &SqliteRow) -> Result<DeviceCertificate, RegistryError> {
    let device: String = row.try_get("device_id")?;
    Ok(DeviceCertificate {
        fingerprint: row.try_get("fingerprint")?,
        serial: row.try_get("serial")?,
        device: DeviceId::new(device).map_err(|e| RegistryError::storage(format!("certificate device: {e}")))?,
        ca: row.try_get("ca_id")?,
        not_before: from_ms(row.try_get("not_before")?),
        not_after: from_ms(row.try_get("not_after")?),
        issued_at: from_ms(row.try_get("issued_at")?),
        issued_by: row.try_get("issued_by")?,
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(from_ms),
        revoked_by: row.try_get("revoked_by")?,
    })
}

#[async_trait]
impl Certificates for SqliteRegistry {
    async fn add_certificate_authority(
        &self,
        actor: &Principal,
        new: NewCertificateAuthority,
    ) -> Result<CertificateAuthority, RegistryError> {
        actor.require_admin()?;
        let tenant = actor.resolve_tenant(new.tenant)?;
        crate::device::check_text("CA name", &new.name, 200)?;
        let id = format!("ca-{:012x}", rand::random::<u64>() >> 16);
        let now = now_ms();
        let auto = new.auto_register.clone();
        if let Some(a) = &auto
            && !matches!(a.status, DeviceStatus::Active | DeviceStatus::PendingApproval)
        {
            return Err(RegistryError::BadInput("auto_register.status must be active or pending-approval".into()));
        }
        let mut tx = self.write_tx().await?;
        ensure_tenant(&mut tx, actor, &tenant).await?;
        if let Some(profile) = auto.as_ref().and_then(|a| a.profile.as_deref()) {
            super::profiles::ensure_profile(&mut tx, actor, profile).await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO certificate_authorities (id, tenant, name, cert_pem, subject, fingerprint, managed, not_after, \
             created_at, created_by, auto_register, register_profile, register_status) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(tenant.as_str())
        .bind(&new.name)
        .bind(&new.certificate)
        .bind(&new.subject)
        .bind(&new.fingerprint)
        .bind(i64::from(new.managed))
        .bind(new.not_after_ms)
        .bind(now)
        .bind(&actor.name)
        .bind(i64::from(auto.is_some()))
        .bind(auto.as_ref().and_then(|a| a.profile.as_deref()))
        .bind(auto.as_ref().map_or(DeviceStatus::Active, |a| a.status).as_str())
        .execute(&mut *tx)
        .await;
        if let Err(sqlx::Error::Database(e)) = &inserted
            && e.is_unique_violation()
        {
            return Err(RegistryError::Conflict(format!("this CA certificate is already registered ({})", new.fingerprint)));
        }
        inserted?;
        let action = if new.managed { "ca.create" } else { "ca.import" };
        audit::record(&mut tx, actor, action, &id, Some(&tenant), json!({"name": new.name, "fingerprint": new.fingerprint}))
            .await?;
        tx.commit().await?;
        self.certificate_authority(actor, &id).await
    }

    async fn certificate_authorities(&self, actor: &Principal) -> Result<Vec<CertificateAuthority>, RegistryError> {
        let rows = sqlx::query(&format!("SELECT {CA_COLUMNS} FROM certificate_authorities ORDER BY created_at"))
            .fetch_all(self.pool())
            .await?;
        let all = rows.iter().map(ca_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(all.into_iter().filter(|ca| actor.sees_tenant(&ca.tenant)).collect())
    }

    async fn certificate_authority(&self, actor: &Principal, id: &str) -> Result<CertificateAuthority, RegistryError> {
        let row = sqlx::query(&format!("SELECT {CA_COLUMNS} FROM certificate_authorities WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        match row.as_ref().map(ca_from_row).transpose()? {
            Some(ca) if actor.sees_tenant(&ca.tenant) => Ok(ca),
            _ => Err(RegistryError::not_found("certificate authority", id)),
        }
    }

    async fn add_device_certificate(
        &self,
        actor: &Principal,
        device: &str,
        new: NewDeviceCertificate,
    ) -> Result<DeviceCertificate, RegistryError> {
        actor.require_write()?;
        let mut tx = self.write_tx().await?;
        let d = fetch_visible(&mut tx, actor, device).await?;
        refuse_decommissioned(&d)?;
        let ca_tenant: Option<String> = sqlx::query("SELECT tenant FROM certificate_authorities WHERE id = ?")
            .bind(&new.ca)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("tenant"))
            .transpose()?;
        if ca_tenant.as_deref() != Some(d.tenant.as_str()) {
            return Err(RegistryError::BadInput(format!(
                "CA {} does not belong to tenant {} of device {device}",
                new.ca, d.tenant
            )));
        }
        sqlx::query(
            "INSERT OR IGNORE INTO device_certificates (fingerprint, serial, device_id, ca_id, not_before, not_after, \
             issued_at, issued_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&new.fingerprint)
        .bind(&new.serial)
        .bind(d.id.as_str())
        .bind(&new.ca)
        .bind(new.not_before_ms)
        .bind(new.not_after_ms)
        .bind(now_ms())
        .bind(&actor.name)
        .execute(&mut *tx)
        .await?;
        let detail = json!({"serial": new.serial, "fingerprint": new.fingerprint, "ca": new.ca});
        audit::record(&mut tx, actor, "certificate.issue", d.id.as_str(), Some(&d.tenant), detail).await?;
        tx.commit().await?;
        self.certificate(&new.fingerprint).await?.ok_or_else(|| RegistryError::storage("certificate vanished after insert"))
    }

    async fn revoke_device_certificate(
        &self,
        actor: &Principal,
        device: &str,
        which: &str,
    ) -> Result<DeviceCertificate, RegistryError> {
        actor.require_write()?;
        let mut tx = self.write_tx().await?;
        let d = fetch_visible(&mut tx, actor, device).await?;
        let which = which.to_ascii_lowercase();
        let updated = sqlx::query(
            "UPDATE device_certificates SET revoked_at = ?, revoked_by = ? \
             WHERE device_id = ? AND (fingerprint = ?4 OR serial = ?4) AND revoked_at IS NULL RETURNING fingerprint",
        )
        .bind(now_ms())
        .bind(&actor.name)
        .bind(d.id.as_str())
        .bind(&which)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = updated else {
            return Err(RegistryError::not_found("unrevoked certificate of this device", &which));
        };
        let fingerprint: String = row.try_get("fingerprint")?;
        audit::record(&mut tx, actor, "certificate.revoke", d.id.as_str(), Some(&d.tenant), json!({"fingerprint": fingerprint}))
            .await?;
        tx.commit().await?;
        self.credentials_changed(&d.id);
        self.certificate(&fingerprint).await?.ok_or_else(|| RegistryError::storage("certificate vanished after revoke"))
    }

    async fn device_certificates(&self, actor: &Principal, device: &str) -> Result<Vec<DeviceCertificate>, RegistryError> {
        let mut conn = self.pool().acquire().await?;
        let d = fetch_visible(&mut conn, actor, device).await?;
        let rows =
            sqlx::query(&format!("SELECT {CERT_COLUMNS} FROM device_certificates WHERE device_id = ? ORDER BY issued_at DESC"))
                .bind(d.id.as_str())
                .fetch_all(&mut *conn)
                .await?;
        rows.iter().map(cert_from_row).collect()
    }

    async fn all_device_certificates(&self, actor: &Principal) -> Result<Vec<(DeviceCertificate, TenantId)>, RegistryError> {
        let rows = sqlx::query(&format!(
            "SELECT {CERT_COLUMNS}, d.tenant AS tenant FROM device_certificates c JOIN devices d ON d.id = c.device_id"
        ))
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let tenant = TenantId::new(row.try_get::<String, _>("tenant")?).map_err(|e| RegistryError::storage(e.to_string()))?;
            if actor.sees_tenant(&tenant) {
                out.push((cert_from_row(row)?, tenant));
            }
        }
        Ok(out)
    }

    async fn certificate(&self, fingerprint: &str) -> Result<Option<DeviceCertificate>, RegistryError> {
        let row = sqlx::query(&format!("SELECT {CERT_COLUMNS} FROM device_certificates WHERE fingerprint = ?"))
            .bind(fingerprint)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(cert_from_row).transpose()
    }

    async fn register_by_certificate(&self, ca: &CertificateAuthority, device: DeviceId) -> Result<Device, RegistryError> {
        let actor =
            Principal { name: format!("auto-register ({})", ca.id), tenant: Some(ca.tenant.clone()), ..Principal::system() };
        let mut new = NewDevice::new(device.clone());
        new.profile = ca.register_profile.clone();
        let (created, _token) = self.insert_device(&actor, new, ca.register_status).await?;
        self.record_audit(
            &actor,
            "device.auto_register",
            device.as_str(),
            Some(&ca.tenant),
            json!({"ca": ca.id, "status": ca.register_status}),
        )
        .await?;
        Ok(created)
    }
}
