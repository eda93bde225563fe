//! MQTT over TLS (`--mqtts`): the server certificate and key from PEM files, a TLS handshake per
//! accepted connection, then the broker serves the decrypted stream like any other.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its handshake by then is dropped, so half-open connections
/// cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS setup from a PEM certificate chain (leaf first) and a PEM private key.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no PEM certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the TLS private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not go together")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS connections until the task is aborted, handing each to the broker.
pub async fn serve_mqtts(listener: TcpListener, acceptor: TlsAcceptor, broker: corral_mqtt::Broker) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "MQTTS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, broker) = (acceptor.clone(), broker.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => broker.serve_connection(tls, peer, "tls").await,
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "MQTTS handshake failed"),
                Err(_) => tracing::info!(%peer, "MQTTS handshake timed out"),
            }
        });
    }
}

/// The address MQTTS listens on, or why the configuration does not hold together.
pub fn listen_addr(listen: &str) -> anyhow::Result<SocketAddr> {
    listen.parse().with_context(|| format!("mqtt.tls_listen: {listen:?} is not an address like 0.0.0.0:8883"))
}
