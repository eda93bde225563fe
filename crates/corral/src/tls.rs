//! TLS listeners: MQTT over TLS (`--mqtts`) and HTTPS (`--https`). The server certificate and key
//! come from PEM files; each accepted connection gets a TLS handshake, then the broker or the
//! HTTP router serves the decrypted stream like any other. A client certificate that chains to a
//! registered CA identifies its device (mTLS); expired, revoked and unknown-CA certificates fail
//! the handshake, logged with the reason and counted.

use anyhow::Context;
use corral_services::metrics::Exposition;
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
/// Time an HTTPS client has to send a request's head (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's TLS setup from a PEM certificate chain (leaf first) and a PEM private key;
/// client certificates are checked by `clients` (optional: token clients share the listener).
/// `alpn` lists the application protocols offered (HTTPS: `http/1.1`; MQTT: none).
pub fn acceptor(
    cert: &Path,
    key: &Path,
    clients: Arc<corral_pki::DeviceCertVerifier>,
    alpn: &[&[u8]],
) -> anyhow::Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no PEM certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the TLS private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Handshakes refused on one listener (`mqtts` or `https`), by reason (`expired`, `revoked`,
/// `unknown CA`, ...), for `/metrics`.
#[derive(Debug, Clone)]
pub struct HandshakeFailures {
    listener: &'static str,
    counts: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
}

impl HandshakeFailures {
    pub fn new(listener: &'static str) -> HandshakeFailures {
        HandshakeFailures { listener, counts: Arc::default() }
    }

    fn count(&self, error: &std::io::Error) -> String {
        let reason = match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(e)) => match e {
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => "expired",
                rustls::CertificateError::Revoked => "revoked",
                rustls::CertificateError::UnknownIssuer => "unknown CA",
                rustls::CertificateError::NotValidYet | rustls::CertificateError::NotValidYetContext { .. } => "not yet valid",
                _ => "bad certificate",
            },
            Some(_) => "tls error",
            None => "connection error",
        };
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(reason.to_string()).or_default() += 1;
        reason.to_string()
    }
}

impl corral_services::MetricsSource for HandshakeFailures {
    fn render(&self, out: &mut String) {
        let name = self.listener;
        let mut e = Exposition::new(out);
        let help = format!("TLS handshakes refused on {name}, by reason.");
        let mut failures = e.family(&format!("corral_{name}_handshake_failures_total"), &help, "counter");
        for (reason, n) in self.counts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            failures.sample(&[("reason", reason)], n);
        }
    }
}

/// A connection once its TLS handshake is done, and the client certificate it presented.
type Handshaken = (tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr, Option<Vec<u8>>);

/// Accepts connections on `listener` until the task is aborted; each gets its TLS handshake
/// (refusals logged with the reason and counted, slow ones dropped) on its own task, then goes to
/// `serve`.
async fn accept_tls<F, Fut>(listener: TcpListener, acceptor: TlsAcceptor, failures: HandshakeFailures, serve: F)
where
    F: Fn(Handshaken) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = failures.listener.to_uppercase();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, listener = name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, failures, serve, name) = (acceptor.clone(), failures.clone(), serve.clone(), name.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let certificate = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                    serve((tls, peer, certificate)).await
                }
                Ok(Err(e)) => {
                    let reason = failures.count(&e);
                    tracing::info!(%peer, reason, error = %e, "{name} handshake refused");
                }
                Err(_) => tracing::info!(%peer, "{name} handshake timed out"),
            }
        });
    }
}

/// MQTT over TLS: each connection goes to the broker with the client certificate it presented.
pub async fn serve_mqtts(listener: TcpListener, acceptor: TlsAcceptor, broker: corral_mqtt::Broker, failures: HandshakeFailures) {
    accept_tls(listener, acceptor, failures, move |(tls, peer, certificate)| {
        let broker = broker.clone();
        async move { broker.serve_tls_connection(tls, peer, certificate).await }
    })
    .await
}

/// Serves the HTTP router over TLS. Each request carries the peer address, the TLS mark and the
/// connection's client certificate, if any ([`corral_http::ClientCertificate`]): telemetry
/// requests without a token authenticate with it.
pub async fn serve_https(listener: TcpListener, acceptor: TlsAcceptor, app: axum::Router, failures: HandshakeFailures) {
    accept_tls(listener, acceptor, failures, move |(tls, peer, certificate)| {
        let app = app.clone();
        async move {
            let certificate = certificate.map(|c| corral_http::ClientCertificate(Arc::new(c)));
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                request.extensions_mut().insert(corral_http::OverTls);
                if let Some(certificate) = &certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
                tower::ServiceExt::oneshot(app.clone(), request)
            });
            // A client that opens a connection and never finishes its request head is dropped.
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = served.await {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended");
            }
        }
    })
    .await
}
