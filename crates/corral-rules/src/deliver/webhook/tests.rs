//! Against real receivers: an axum server on 127.0.0.1:0 for HTTP, `openssl s_server` for HTTPS.

use super::*;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A receiver on 127.0.0.1:0; returns its port.
async fn serve(router: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

fn loopback_allowed() -> WebhookClient {
    let policy = TargetPolicy { allow: vec!["127.0.0.1".into()], ..TargetPolicy::default() };
    WebhookClient::new(policy, TIMEOUT).unwrap()
}

/// Answers `/status/{code}` with that status, a Location for 3xx and a body naming it.
async fn status_server() -> u16 {
    let answer = |Path(code): Path<u16>| async move {
        let status = StatusCode::from_u16(code).unwrap();
        let location = [("location", "https://elsewhere.example/hook")];
        (status, location, format!("because {code}")).into_response()
    };
    serve(Router::new().route("/status/{code}", post(answer))).await
}

#[test]
fn signature_matches_an_independent_implementation() {
    // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret",b"1700000000.{\"a\":1}",hashlib.sha256).hexdigest())'
    assert_eq!(
        signature("secret", 1_700_000_000, br#"{"a":1}"#),
        "v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
    );
}

#[tokio::test]
async fn post_arrives_signed_with_every_header() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let receive = move |headers: HeaderMap, body: Bytes| async move {
        tx.send((headers, body)).unwrap();
        StatusCode::NO_CONTENT
    };
    let port = serve(Router::new().route("/hook", post(receive))).await;
    let url = format!("http://127.0.0.1:{port}/hook?token=t");
    let body = br#"{"alarm":"hot","value":41.5}"#;
    loopback_allowed().post(&url, "s3cret", "action-7-1", "alarm.raised", body).await.unwrap();

    let (headers, received) = rx.recv().await.unwrap();
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
    assert_eq!(&received[..], body);
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("user-agent"), concat!("corral/", env!("CARGO_PKG_VERSION")));
    assert_eq!(header("x-corral-event"), "alarm.raised");
    assert_eq!(header("idempotency-key"), "action-7-1");
    let timestamp = header("x-corral-timestamp");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - timestamp.parse::<i64>().unwrap()).abs() < 60);
    // Verify the way a receiver would, without our `signature`.
    let sent = header("x-corral-signature");
    let digest = hex::decode(sent.strip_prefix("v1=").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&received);
    mac.verify_slice(&digest).expect("signature verifies");
}

#[tokio::test]
async fn statuses_map_to_retry_or_permanent_with_status_and_body() {
    let port = status_server().await;
    let client = loopback_allowed();
    for (code, retryable) in [(500, true), (503, true), (408, true), (429, true), (404, true), (400, true), (410, false)] {
        let url = format!("http://127.0.0.1:{port}/status/{code}");
        let err = client.post(&url, "k", "id", "e", b"{}").await.unwrap_err();
        assert_eq!(err.retryable, retryable, "{code}: {err}");
        assert!(err.message.contains(&code.to_string()), "{code}: {err}");
        assert!(err.message.contains(&format!("because {code}")), "{code}: {err}");
    }
    let url = format!("http://127.0.0.1:{port}/status/302");
    let err = client.post(&url, "k", "id", "e", b"{}").await.unwrap_err();
    assert!(err.retryable && err.message.contains("https://elsewhere.example/hook"), "{err}");
}

#[tokio::test]
async fn default_policy_refuses_loopback_by_ip_and_by_resolved_name() {
    let port = status_server().await;
    let client = WebhookClient::new(TargetPolicy::default(), TIMEOUT).unwrap();
    for host in ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "localhost"] {
        let url = format!("http://{host}:{port}/status/200");
        let err = client.post(&url, "k", "id", "e", b"{}").await.unwrap_err();
        assert!(!err.retryable, "{host}: {err}");
        assert!(err.message.contains("loopback"), "{host}: {err}");
        assert!(err.message.contains("rules.webhooks.allow"), "{host}: {err}");
    }
}

#[tokio::test]
async fn bad_urls_are_permanent_and_network_failures_retry() {
    let client = loopback_allowed();
    for url in ["not a url", "ftp://127.0.0.1/x", "file:///etc/passwd"] {
        let err = client.post(url, "k", "id", "e", b"{}").await.unwrap_err();
        assert!(!err.retryable, "{url}: {err}");
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("http://127.0.0.1:{port}/?token=hidden");
    let err = client.post(&url, "k", "id", "e", b"{}").await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(!err.message.contains("hidden"), "query is redacted: {err}");
}

#[tokio::test]
async fn a_slow_receiver_times_out_as_retryable() {
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        StatusCode::OK
    };
    let port = serve(Router::new().route("/", post(slow))).await;
    let policy = TargetPolicy { allow_private: true, ..TargetPolicy::default() };
    let client = WebhookClient::new(policy, Duration::from_millis(200)).unwrap();
    let err = client.post(&format!("http://127.0.0.1:{port}/"), "k", "i", "e", b"{}").await;
    let err = err.unwrap_err();
    assert!(err.retryable && err.message.contains("timed out"), "{err}");
}

/// `openssl s_server` with a fresh self-signed certificate for 127.0.0.1, killed when dropped.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    /// Holds the key and certificate until the server is gone.
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run openssl ({e}); install it (scripts/test.sh does)"))
        };
        let status = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .wait()
        .unwrap();
        assert!(status.success(), "openssl req failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let accept = format!("127.0.0.1:{port}");
        let child = openssl(&["s_server", "-quiet", "-www", "-accept", &accept, "-cert", "cert.pem", "-key", "key.pem"]);
        let server = TlsServer { child, port, _dir: dir };
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("openssl s_server did not listen on port {port} within 5 s");
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Building the client loads the ring provider and the platform verifier (a missing provider
/// would panic in `new`), and the verifier really checks: a certificate no system root vouches
/// for is refused, and retried (the receiver may fix its certificate).
#[tokio::test]
async fn https_refuses_a_certificate_the_system_does_not_trust() {
    let server = TlsServer::start().await;
    let url = format!("https://127.0.0.1:{}/", server.port);
    let err = loopback_allowed().post(&url, "k", "id", "e", b"{}").await.unwrap_err();
    assert!(err.retryable && err.message.contains("invalid peer certificate"), "{err}");
}
