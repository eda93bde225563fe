//! Certificates for device identity: a certificate authority per tenant, and the mTLS check.
//!
//! Place on the data path: **identity**. [`Authorities`] is the service (records in the
//! registry, managed CA keys as 0600 files, the [`DeviceCertVerifier`] TLS listeners use);
//! the functions below are the cryptography without storage. A tenant's CA ([`create_ca`], or an operator's own CA
//! registered by its certificate) signs device certificates ([`issue`]): from the device's CSR,
//! so the private key never leaves the device, or with a key generated once for it. The device id
//! is the certificate's URI SAN `urn:corral:device:<id>` (written by Corral) or its subject CN
//! ([`CertInfo::device_id`]); [`inspect`] reads what the registry stores of a certificate
//! (serial, SHA-256 fingerprint, validity).
//!
//! ```
//! let ca = corral_pki::create_ca("Acme devices", 3650).unwrap();
//! let issued = corral_pki::issue(&ca.cert_pem, &ca.key_pem, "pump-7", None, 365).unwrap();
//! assert_eq!(issued.info.device_id().as_deref(), Some("pump-7"));
//! assert!(issued.key_pem.is_some()); // no CSR given: the key was generated, shown once
//! ```

mod authority;
mod identity;
mod inspect;
mod verifier;

pub use authority::{Authorities, IssuedCertificate, Pki};
pub use identity::Identities;
pub use inspect::{CertInfo, inspect, pem_certificates};
pub use verifier::{DeviceCertVerifier, fingerprint};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}")]
    BadInput(String),
    #[error("certificate operation failed: {0}")]
    Crypto(String),
}

fn crypto(e: rcgen::Error) -> PkiError {
    PkiError::Crypto(e.to_string())
}

/// A new CA: its self-signed certificate, its private key (for the key store only), and what
/// the registry keeps of it.
pub struct NewCa {
    pub cert_pem: String,
    pub key_pem: String,
    pub info: CertInfo,
}

/// A device certificate just signed. `key_pem` is set only when Corral generated the key: it is
/// shown to the caller once and never stored.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Option<String>,
    pub info: CertInfo,
}

/// The URI SAN prefix naming a device.
pub const DEVICE_URI_PREFIX: &str = "urn:corral:device:";

/// Creates a CA: a P-256 key and a self-signed certificate valid `valid_days`, allowed to sign
/// end-entity certificates only (path length 0).
pub fn create_ca(name: &str, valid_days: u32) -> Result<NewCa, PkiError> {
    if name.trim().is_empty() {
        return Err(PkiError::BadInput("a CA needs a name".into()));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationName, "Corral");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, valid_days);
    let key = KeyPair::generate().map_err(crypto)?;
    let cert = params.self_signed(&key).map_err(crypto)?;
    let info = inspect(cert.der())?;
    Ok(NewCa { cert_pem: cert.pem(), key_pem: key.serialize_pem(), info })
}

/// Signs a certificate for `device_id` with the CA: for the public key of `csr_pem` if given
/// (its subject and extensions are replaced: Corral decides the identity), else for a new P-256
/// key returned in [`Issued::key_pem`]. Subject CN and URI SAN name the device; the certificate
/// is for TLS client authentication only.
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    device_id: &str,
    csr_pem: Option<&str>,
    valid_days: u32,
) -> Result<Issued, PkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| PkiError::Crypto(format!("the CA key: {e}")))?;
    let issuer =
        Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(|e| PkiError::Crypto(format!("the CA certificate: {e}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, device_id);
    let uri = format!("{DEVICE_URI_PREFIX}{device_id}");
    params.subject_alt_names =
        vec![SanType::URI(uri.try_into().map_err(|_| PkiError::BadInput("device id is not URI-safe".into()))?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, valid_days);
    let (cert, key_pem) = match csr_pem {
        Some(csr) => {
            let mut csr = CertificateSigningRequestParams::from_pem(csr)
                .map_err(|e| PkiError::BadInput(format!("the CSR is not a PEM certificate request: {e}")))?;
            csr.params = params;
            (csr.signed_by(&issuer).map_err(crypto)?, None)
        }
        None => {
            let key = KeyPair::generate().map_err(crypto)?;
            (params.signed_by(&key, &issuer).map_err(crypto)?, Some(key.serialize_pem()))
        }
    };
    let info = inspect(cert.der())?;
    Ok(Issued { cert_pem: cert.pem(), key_pem, info })
}

/// A random positive 16-byte serial (RFC 5280 §4.1.2.2: unique per CA, at most 20 bytes), and
/// validity from one hour ago (clock skew between server and device) for `valid_days`.
fn validity(params: &mut CertificateParams, valid_days: u32) {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(valid_days));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_keeps_its_key_but_not_its_claimed_identity() {
        let ca = create_ca("Acme", 30).unwrap();
        assert!(ca.info.is_ca);
        let device_key = KeyPair::generate().unwrap();
        let mut claimed = CertificateParams::new(vec!["evil.example".into()]).unwrap();
        claimed.distinguished_name.push(DnType::CommonName, "someone-else");
        let csr = claimed.serialize_request(&device_key).unwrap().pem().unwrap();
        let issued = issue(&ca.cert_pem, &ca.key_pem, "meter-9", Some(&csr), 365).unwrap();
        assert!(issued.key_pem.is_none());
        assert_eq!(issued.info.device_id().as_deref(), Some("meter-9"));
        assert_eq!(issued.info.common_name.as_deref(), Some("meter-9"));
        assert_eq!(issued.info.issuer, ca.info.subject);
        assert!(issued.info.not_after_ms - issued.info.not_before_ms > 365 * 86_400_000);
        assert_ne!(issued.info.serial, ca.info.serial);
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        let ca = create_ca("Acme", 30).unwrap();
        let Err(err) = issue(&ca.cert_pem, &ca.key_pem, "d", Some("not a csr"), 1) else { panic!("a bad CSR was signed") };
        assert!(err.to_string().contains("the CSR is not a PEM certificate request"), "{err}");
        assert!(matches!(create_ca(" ", 1), Err(PkiError::BadInput(_))));
    }
}
