//! [`Authorities`]: the tenants' CAs as a service — create or import one, issue and revoke
//! device certificates, and tell who an mTLS client is. Records live in the registry (with the
//! audit trail); a managed CA's private key is a file `<key dir>/<ca id>.key`, mode 0600.

use crate::verifier::DeviceCertVerifier;
use crate::{CertInfo, PkiError, create_ca, inspect, issue, pem_certificates};
use async_trait::async_trait;
use corral_model::{DeviceId, TenantId};
use corral_registry::{
    AutoRegister, CertificateAuthority, DeviceCertificate, DeviceStatus, NewCertificateAuthority, NewDeviceCertificate,
    Principal, Registry, RegistryError,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

/// A device certificate just issued: the record, the certificate, and the key if Corral made
/// it (returned this once, never stored). As the REST API answers it.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct IssuedCertificate {
    pub record: DeviceCertificate,
    /// The certificate (PEM).
    pub certificate: String,
    /// The private key Corral made (PEM), shown only this once; absent when the request had a CSR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

/// The tenants' PKI as operators use it: create or import a CA, issue and revoke device
/// certificates. The REST API holds it as `Arc<dyn Pki>`; [`Authorities`] implements it.
#[async_trait]
pub trait Pki: Send + Sync {
    /// Creates a CA for a tenant: key and self-signed certificate made here, key saved 0600.
    async fn create(
        &self,
        actor: &Principal,
        name: &str,
        tenant: Option<TenantId>,
        valid_days: u32,
        auto: Option<AutoRegister>,
    ) -> Result<CertificateAuthority, RegistryError>;

    /// Registers an operator's own CA by its certificate: Corral verifies against it, never
    /// issues with it.
    async fn import(
        &self,
        actor: &Principal,
        name: &str,
        tenant: Option<TenantId>,
        pem: &str,
        auto: Option<AutoRegister>,
    ) -> Result<CertificateAuthority, RegistryError>;

    /// Signs a certificate for a device with a managed CA of its tenant (`ca`, or the tenant's
    /// only managed CA): for the key of `csr` if given, else for a key made here.
    async fn issue(
        &self,
        actor: &Principal,
        device: &str,
        ca: Option<&str>,
        csr: Option<&str>,
        valid_days: u32,
    ) -> Result<IssuedCertificate, RegistryError>;

    /// Revokes a device certificate: refused at the next handshake, live connections closed.
    async fn revoke(&self, actor: &Principal, device: &str, which: &str) -> Result<DeviceCertificate, RegistryError>;
}

/// Cheap to clone; one per server.
#[derive(Clone)]
pub struct Authorities {
    registry: Arc<dyn Registry>,
    key_dir: PathBuf,
    verifier: Arc<DeviceCertVerifier>,
    /// Every registered CA, as last loaded: read on each mTLS connection, replaced when a CA
    /// is added.
    cas: Arc<std::sync::RwLock<Arc<Vec<CertificateAuthority>>>>,
}

fn bad(e: PkiError) -> RegistryError {
    match e {
        PkiError::BadInput(m) => RegistryError::BadInput(m),
        PkiError::Crypto(m) => RegistryError::Storage(m),
    }
}

impl Authorities {
    /// Loads the registered CAs and revocations into the mTLS verifier.
    pub async fn open(
        registry: Arc<dyn Registry>,
        key_dir: PathBuf,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Authorities, RegistryError> {
        let authorities =
            Authorities { registry, key_dir, verifier: Arc::new(DeviceCertVerifier::new(provider)), cas: Arc::default() };
        authorities.reload_cas().await?;
        let certificates = authorities.registry.all_device_certificates(&Principal::system()).await?;
        authorities.verifier.revoke(certificates.into_iter().filter(|(c, _)| c.revoked_at.is_some()).map(|(c, _)| c.fingerprint));
        Ok(authorities)
    }

    /// The client-certificate verifier for TLS listeners (MQTTS).
    pub fn verifier(&self) -> Arc<DeviceCertVerifier> {
        self.verifier.clone()
    }

    /// Reads the CAs (after one was added) into the verifier and the cached list.
    async fn reload_cas(&self) -> Result<(), RegistryError> {
        let cas = self.registry.certificate_authorities(&Principal::system()).await?;
        let ders: Vec<Vec<u8>> = cas.iter().filter_map(|ca| pem_certificates(&ca.certificate).ok()?.into_iter().next()).collect();
        self.verifier.trust(&ders);
        *self.cas.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cas);
        Ok(())
    }

    /// Who a client certificate (DER, already verified against the CAs by the TLS layer) names:
    /// an active device of the tenant of the CA that signed it. A certificate of an operator's
    /// own CA is recorded at its first use, so it can be listed and revoked.
    pub async fn identify(&self, der: &[u8]) -> Result<corral_registry::DeviceIdentity, String> {
        let info = inspect(der).map_err(|e| e.to_string())?;
        let device = info.device_id().ok_or("the certificate names no device (CN or URI SAN)")?;
        let system = Principal::system();
        let cas = self.cas.read().unwrap_or_else(|p| p.into_inner()).clone();
        // CAs of different tenants may share a subject (two tenants each made an "Acme" CA):
        // the device's tenant decides which one vouches for it.
        let issuers: Vec<&CertificateAuthority> = cas.iter().filter(|ca| ca.subject == info.issuer).collect();
        if issuers.is_empty() {
            return Err("no registered CA issued this certificate".into());
        }
        let known = self.registry.certificate(&info.fingerprint).await.map_err(|e| e.to_string())?;
        if let Some(known) = &known {
            if known.revoked_at.is_some() {
                return Err(format!("certificate {} is revoked", info.serial));
            }
            if known.device.as_str() != device {
                return Err("the certificate was issued to another device".into());
            }
        }
        let d = match self.registry.get_device(&system, &device).await {
            Ok(d) => d,
            Err(RegistryError::NotFound(_)) if issuers.iter().any(|ca| ca.auto_register) => {
                // Just-in-time registration: the CA vouches for the device's first connection.
                let ca = issuers.iter().find(|ca| ca.auto_register).copied().expect("checked above");
                let id =
                    DeviceId::new(device.as_str()).map_err(|e| format!("the certificate names an invalid device id: {e}"))?;
                let d = self.registry.register_by_certificate(ca, id).await.map_err(|e| e.to_string())?;
                tracing::info!(device, ca = ca.id, status = %d.status, "device registered by its certificate");
                d
            }
            Err(_) => return Err(format!("device {device} is not registered")),
        };
        let Some(ca) = issuers.iter().find(|ca| ca.tenant == d.tenant) else {
            return Err(format!("device {device} is not in the tenant of the CA that issued its certificate"));
        };
        if d.status != DeviceStatus::Decommissioned && known.is_none() {
            let first_use = Principal { name: "first use".into(), ..Principal::system() };
            self.registry
                .add_device_certificate(&first_use, &device, new_cert(&ca.id, &info))
                .await
                .map_err(|e| e.to_string())?;
        }
        if d.status != DeviceStatus::Active {
            return Err(format!("device {device} is {}", d.status));
        }
        Ok(corral_registry::DeviceIdentity { id: d.id, tenant: d.tenant, status: d.status, gateway: d.gateway })
    }

    fn save_key(&self, id: &str, pem: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.key_dir)?;
        let path = self.key_dir.join(format!("{id}.key"));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()
    }
}

#[async_trait]
impl Pki for Authorities {
    async fn create(
        &self,
        actor: &Principal,
        name: &str,
        tenant: Option<TenantId>,
        valid_days: u32,
        auto: Option<AutoRegister>,
    ) -> Result<CertificateAuthority, RegistryError> {
        let ca = create_ca(name, valid_days).map_err(bad)?;
        let record =
            self.registry.add_certificate_authority(actor, new_ca(name, tenant, &ca.cert_pem, &ca.info, true, auto)).await?;
        if let Err(e) = self.save_key(&record.id, &ca.key_pem) {
            tracing::error!(ca = record.id, error = %e, "could not save the CA key; the CA cannot issue");
            return Err(RegistryError::Storage(format!("saving the CA key: {e}")));
        }
        self.reload_cas().await?;
        tracing::info!(ca = record.id, tenant = %record.tenant, by = actor.name, "certificate authority created");
        Ok(record)
    }

    async fn import(
        &self,
        actor: &Principal,
        name: &str,
        tenant: Option<TenantId>,
        pem: &str,
        auto: Option<AutoRegister>,
    ) -> Result<CertificateAuthority, RegistryError> {
        let der = pem_certificates(pem)
            .map_err(bad)?
            .into_iter()
            .next()
            .ok_or_else(|| RegistryError::BadInput("no certificate".into()))?;
        let info = inspect(&der).map_err(bad)?;
        if !info.is_ca {
            return Err(RegistryError::BadInput("this certificate is not a CA (basicConstraints CA:TRUE is missing)".into()));
        }
        let record = self.registry.add_certificate_authority(actor, new_ca(name, tenant, pem, &info, false, auto)).await?;
        self.reload_cas().await?;
        Ok(record)
    }

    async fn issue(
        &self,
        actor: &Principal,
        device: &str,
        ca: Option<&str>,
        csr: Option<&str>,
        valid_days: u32,
    ) -> Result<IssuedCertificate, RegistryError> {
        let d = self.registry.get_device(actor, device).await?;
        let ca = match ca {
            Some(id) => self.registry.certificate_authority(actor, id).await?,
            None => {
                let mut managed: Vec<_> = self
                    .registry
                    .certificate_authorities(actor)
                    .await?
                    .into_iter()
                    .filter(|c| c.managed && c.tenant == d.tenant)
                    .collect();
                match managed.len() {
                    1 => managed.remove(0),
                    0 => {
                        return Err(RegistryError::BadInput(format!(
                            "tenant {} has no CA of Corral's to issue with; create one (POST /api/v1/cas)",
                            d.tenant
                        )));
                    }
                    _ => {
                        return Err(RegistryError::BadInput(format!(
                            "tenant {} has several CAs; name one with \"ca\"",
                            d.tenant
                        )));
                    }
                }
            }
        };
        if !ca.managed {
            return Err(RegistryError::BadInput(format!("CA {} is the operator's own: Corral only verifies against it", ca.id)));
        }
        let key = std::fs::read_to_string(self.key_dir.join(format!("{}.key", ca.id)))
            .map_err(|e| RegistryError::Storage(format!("reading the key of CA {}: {e}", ca.id)))?;
        let issued = issue(&ca.certificate, &key, d.id.as_str(), csr, valid_days).map_err(bad)?;
        let record = self.registry.add_device_certificate(actor, device, new_cert(&ca.id, &issued.info)).await?;
        Ok(IssuedCertificate { record, certificate: issued.cert_pem, private_key: issued.key_pem })
    }

    async fn revoke(&self, actor: &Principal, device: &str, which: &str) -> Result<DeviceCertificate, RegistryError> {
        let record = self.registry.revoke_device_certificate(actor, device, which).await?;
        self.verifier.revoke([record.fingerprint.clone()]);
        Ok(record)
    }
}

fn new_ca(
    name: &str,
    tenant: Option<TenantId>,
    pem: &str,
    info: &CertInfo,
    managed: bool,
    auto_register: Option<AutoRegister>,
) -> NewCertificateAuthority {
    NewCertificateAuthority {
        tenant,
        name: name.to_string(),
        certificate: pem.to_string(),
        subject: info.subject.clone(),
        fingerprint: info.fingerprint.clone(),
        not_after_ms: info.not_after_ms,
        managed,
        auto_register,
    }
}

fn new_cert(ca: &str, info: &CertInfo) -> NewDeviceCertificate {
    NewDeviceCertificate {
        fingerprint: info.fingerprint.clone(),
        serial: info.serial.clone(),
        ca: ca.to_string(),
        not_before_ms: info.not_before_ms,
        not_after_ms: info.not_after_ms,
    }
}
