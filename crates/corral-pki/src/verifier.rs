//! The mTLS client-certificate check: a client certificate must chain to one of the registered
//! CAs (any tenant: the device's own tenant is checked at CONNECT), be within its validity, and
//! not be revoked. A client without a certificate may still authenticate with a token.
//!
//! The CA set and the revocations change at run time, so the verifier holds the current
//! webpki verifier behind a lock and is rebuilt when a CA is added.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct DeviceCertVerifier {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    /// SHA-256 fingerprints (hex) of revoked certificates.
    revoked: RwLock<HashSet<String>>,
}

impl DeviceCertVerifier {
    pub fn new(provider: Arc<CryptoProvider>) -> DeviceCertVerifier {
        DeviceCertVerifier { provider, current: RwLock::new(WebPkiClientVerifier::no_client_auth()), revoked: RwLock::default() }
    }

    /// Trusts exactly these CA certificates (DER) from now on; no CA means no client
    /// certificates are asked for.
    pub fn trust(&self, cas: &[Vec<u8>]) {
        let mut roots = RootCertStore::empty();
        for der in cas {
            if let Err(e) = roots.add(CertificateDer::from(der.clone())) {
                tracing::warn!(error = %e, "a registered CA certificate is not usable as a trust anchor");
            }
        }
        let verifier = if roots.is_empty() {
            WebPkiClientVerifier::no_client_auth()
        } else {
            match WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .allow_unauthenticated()
                .build()
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the client-certificate verifier; mTLS is off");
                    WebPkiClientVerifier::no_client_auth()
                }
            }
        };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = verifier;
    }

    pub fn revoke(&self, fingerprints: impl IntoIterator<Item = String>) {
        self.revoked.write().unwrap_or_else(|p| p.into_inner()).extend(fingerprints);
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

impl ClientCertVerifier for DeviceCertVerifier {
    fn offer_client_auth(&self) -> bool {
        self.current().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        false // devices with tokens share the listener
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // An empty list: a client sends whatever certificate it has (RFC 8446 §4.2.4).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.current().verify_client_cert(end_entity, intermediates, now)?;
        if self.revoked.read().unwrap_or_else(|p| p.into_inner()).contains(&fingerprint(end_entity)) {
            return Err(Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
