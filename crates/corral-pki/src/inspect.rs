//! Reading a certificate: what the registry keeps of it and whom it names.

use crate::{DEVICE_URI_PREFIX, PkiError};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What Corral keeps of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Lowercase hex, as `openssl x509 -serial` prints it (without leading zero bytes).
    pub serial: String,
    /// SHA-256 of the DER, lowercase hex: what `openssl x509 -fingerprint -sha256` shows.
    pub fingerprint: String,
    pub subject: String,
    /// The issuer's distinguished name, to find the CA that signed it.
    pub issuer: String,
    pub common_name: Option<String>,
    pub uri_sans: Vec<String>,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    pub is_ca: bool,
}

impl CertInfo {
    /// The device a client certificate names: its URI SAN `urn:corral:device:<id>`, else its
    /// subject CN.
    pub fn device_id(&self) -> Option<String> {
        self.uri_sans
            .iter()
            .find_map(|u| u.strip_prefix(DEVICE_URI_PREFIX))
            .map(str::to_owned)
            .or_else(|| self.common_name.clone())
    }
}

/// Reads a DER certificate.
pub fn inspect(der: &[u8]) -> Result<CertInfo, PkiError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::BadInput(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(PkiError::BadInput("trailing bytes after the certificate".into()));
    }
    let serial = cert.raw_serial().iter().skip_while(|b| **b == 0).map(|b| format!("{b:02x}")).collect::<String>();
    let mut uri_sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uri_sans.push(uri.to_string());
            }
        }
    }
    let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
    let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
    Ok(CertInfo {
        serial: if serial.is_empty() { "00".into() } else { serial },
        fingerprint: hex(&Sha256::digest(der)),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        common_name,
        uri_sans,
        not_before_ms: cert.validity().not_before.timestamp() * 1000,
        not_after_ms: cert.validity().not_after.timestamp() * 1000,
        is_ca,
    })
}

/// Every certificate in a PEM text, as DER, in order.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut out = Vec::new();
    for item in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let item = item.map_err(|e| PkiError::BadInput(format!("not PEM: {e}")))?;
        if item.label == "CERTIFICATE" {
            out.push(item.contents);
        }
    }
    if out.is_empty() {
        return Err(PkiError::BadInput("no PEM CERTIFICATE block".into()));
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
