//! X.509 device identity: CAs created by Corral or imported, certificates signed from a CSR or
//! with a key made by Corral, and mTLS on MQTTS with `mosquitto_pub --cert --key` and paho-mqtt —
//! accepted, revoked, expired, from an unknown CA (certificates crafted with the openssl CLI) —
//! and just-in-time registration.

use corral_testkit::{TestServer, key_and_csr, openssl};
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const PAHO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mqtt_clients.py");

/// The MQTTS server's own CA and certificate, an operator's own device CA (`own`), and a CA
/// nobody registered (`stranger`).
fn setup(dir: &Path) {
    for (name, cn) in [("server-ca", "Server CA"), ("own", "Own Device CA"), ("stranger", "Stranger CA")] {
        corral_testkit::make_ca(dir, name, cn);
    }
    key_and_csr(dir, "server", "localhost");
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "server-ca.pem",
            "-CAkey",
            "server-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    // `openssl ca` sets arbitrary validity dates: for the expired certificate.
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = own\n[own]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial.txt\ndefault_md = sha256\n\
         policy = any\nunique_subject = no\nx509_extensions = client\n[any]\ncommonName = supplied\n\
         [client]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n").unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial.txt"), "1000\n").unwrap();
}

/// The certificates of [`setup`] in `dir`, and a server with MQTTS on them.
async fn start(dir: &Path) -> TestServer {
    setup(dir);
    let (cert, key) = (dir.join("server.pem").display().to_string(), dir.join("server.key").display().to_string());
    TestServer::start_with(BIN, &["--mqtts", "127.0.0.1:0", "--https", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key])
        .await
}

/// Signs `<name>.csr` with CA `ca` as an X.509 v3 client certificate (openssl's own signing, as
/// an operator's CA would).
fn sign(dir: &Path, ca: &str, name: &str) {
    let (csr, ca_pem, ca_key, out) = (format!("{name}.csr"), format!("{ca}.pem"), format!("{ca}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "client.ext",
            "-out",
            &out,
        ],
    );
}

/// `mosquitto_pub` over MQTTS with a client certificate and no password; true if acknowledged.
fn publish_with(server: &TestServer, dir: &Path, cert: &str, device: &str, payload: &str) -> bool {
    let (host, port) = server.mqtts.rsplit_once(':').expect("MQTTS address logged");
    let out = Command::new("mosquitto_pub")
        .args(["-h", host, "-p", port, "-V", "mqttv5", "-q", "1", "-i", device])
        .args(["--cafile", "server-ca.pem", "--cert", &format!("{cert}.pem"), "--key", &format!("{cert}.key")])
        .args(["-t", &format!("devices/{device}/telemetry"), "-m", payload])
        .current_dir(dir)
        .output()
        .unwrap();
    out.status.success()
}

#[tokio::test]
async fn devices_connect_with_certificates_of_a_corral_ca_or_an_imported_one_and_bad_ones_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let server = start(dir).await;
    for id in ["meter-1", "meter-2", "meter-3"] {
        server.register_device(id, json!({})).await;
    }

    // A CA made by Corral signs the device's CSR: the key never left the device.
    let (status, ca) = server.admin(Method::POST, "/api/v1/cas", Some(json!({"name": "Acme devices"}))).await;
    assert_eq!(status, 201, "{ca}");
    assert_eq!(ca["managed"], json!(true));
    key_and_csr(dir, "meter-1", "ignored-claim");
    let csr = std::fs::read_to_string(dir.join("meter-1.csr")).unwrap();
    let (status, issued) = server.admin(Method::POST, "/api/v1/devices/meter-1/certificate", Some(json!({"csr": csr}))).await;
    assert_eq!(status, 201, "{issued}");
    assert!(issued.get("private_key").is_none(), "a CSR's key stays with the device");
    std::fs::write(dir.join("meter-1.pem"), issued["certificate"].as_str().unwrap()).unwrap();
    assert!(publish_with(&server, dir, "meter-1", "meter-1", r#"{"kwh": 1}"#), "{}", server.log_text());

    // Or Corral makes the key, shown once.
    let (status, issued) =
        server.admin(Method::POST, "/api/v1/devices/meter-2/certificate", Some(json!({"valid_days": 30}))).await;
    assert_eq!(status, 201, "{issued}");
    std::fs::write(dir.join("meter-2.pem"), issued["certificate"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("meter-2.key"), issued["private_key"].as_str().unwrap()).unwrap();
    assert!(publish_with(&server, dir, "meter-2", "meter-2", r#"{"kwh": 2}"#));
    // paho-mqtt with the same certificate, MQTT 5 and 3.1.1.
    let (host, port) = server.mqtts.rsplit_once(':').unwrap();
    for (version, kwh) in [("5", "2.5"), ("311", "2.6")] {
        let out = Command::new("python3")
            .args([
                PAHO,
                "publish",
                host,
                port,
                "meter-2",
                "",
                "",
                version,
                "devices/meter-2/telemetry",
                &format!(r#"{{"kwh": {kwh}}}"#),
            ])
            .env(
                "MQTT_TLS",
                format!(
                    "{},{},{}",
                    dir.join("server-ca.pem").display(),
                    dir.join("meter-2.pem").display(),
                    dir.join("meter-2.key").display()
                ),
            )
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "puback 0",
            "paho {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A certificate names one device: it cannot connect as another.
    assert!(!publish_with(&server, dir, "meter-2", "meter-1", r#"{"kwh": 99}"#));

    // The operator's own CA, registered by its certificate: Corral only verifies.
    let own = std::fs::read_to_string(dir.join("own.pem")).unwrap();
    let (status, imported) = server.admin(Method::POST, "/api/v1/cas", Some(json!({"name": "Own", "certificate": own}))).await;
    assert_eq!(status, 201, "{imported}");
    assert_eq!(imported["managed"], json!(false));
    key_and_csr(dir, "meter-3", "meter-3");
    sign(dir, "own", "meter-3");
    assert!(publish_with(&server, dir, "meter-3", "meter-3", r#"{"kwh": 3}"#), "{}", server.log_text());
    let (_, listed) = server.admin(Method::GET, "/api/v1/devices/meter-3/certificates", None).await;
    assert_eq!(listed["certificates"][0]["issued_by"], json!("first use"), "{listed}");

    // Refused: a CA nobody registered, an expired certificate, a revoked one.
    key_and_csr(dir, "stranger-1", "meter-1");
    sign(dir, "stranger", "stranger-1");
    assert!(!publish_with(&server, dir, "stranger-1", "meter-1", r#"{"kwh": 90}"#));
    key_and_csr(dir, "expired-3", "meter-3");
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "own.pem",
            "-keyfile",
            "own.key",
            "-in",
            "expired-3.csr",
            "-out",
            "expired-3.pem",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
        ],
    );
    assert!(!publish_with(&server, dir, "expired-3", "meter-3", r#"{"kwh": 91}"#));
    let (_, listed) = server.admin(Method::GET, "/api/v1/devices/meter-1/certificates", None).await;
    let serial = listed["certificates"][0]["serial"].as_str().unwrap().to_string();
    let (status, revoked) = server.admin(Method::DELETE, &format!("/api/v1/devices/meter-1/certificate/{serial}"), None).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    assert!(!publish_with(&server, dir, "meter-1", "meter-1", r#"{"kwh": 92}"#));

    let rows = server.query("SELECT device, kwh FROM telemetry ORDER BY kwh").await;
    let expected = [("meter-1", 1.0), ("meter-2", 2.0), ("meter-2", 2.5), ("meter-2", 2.6), ("meter-3", 3.0)];
    assert_eq!(rows, expected.map(|(d, k)| vec![json!(d), json!(k)]).to_vec());
    // Expiry at a glance in SQL; refused certificates were never recorded.
    let rows = server.query("SELECT device, revoked, round(days_to_expiry) FROM certificates ORDER BY device").await;
    assert_eq!(
        rows,
        vec![
            vec![json!("meter-1"), json!(true), json!(365.0)],
            vec![json!("meter-2"), json!(false), json!(30.0)],
            vec![json!("meter-3"), json!(false), json!(2.0)],
        ]
    );
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    for reason in ["unknown CA", "expired", "revoked"] {
        assert!(
            metrics.contains(&format!("corral_mqtts_handshake_failures_total{{reason=\"{reason}\"}} 1")),
            "{reason}: {metrics}"
        );
    }
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["ca.create", "ca.import", "certificate.issue", "certificate.revoke"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

#[tokio::test]
async fn a_ca_marked_auto_register_creates_devices_at_their_first_connection_active_or_pending_approval() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let server = start(dir).await;
    // Two factory CAs of the operator's: one trusted outright, one whose devices wait for approval.
    for (ca, status) in [("own", "active"), ("stranger", "pending-approval")] {
        let pem = std::fs::read_to_string(dir.join(format!("{ca}.pem"))).unwrap();
        let body = json!({"name": ca, "certificate": pem, "auto_register": {"profile": "meter", "status": status}});
        let (code, created) = server.admin(Method::POST, "/api/v1/cas", Some(body)).await;
        assert_eq!(code, 201, "{created}");
        assert_eq!(created["auto_register"], json!(true));
    }
    let device = |id: &str| {
        let id = id.to_string();
        let server = &server;
        async move { server.admin(Method::GET, &format!("/api/v1/devices/{id}"), None).await }
    };
    // Never registered by a person: its first connection creates it, active, and is accepted.
    key_and_csr(dir, "field-1", "field-1");
    sign(dir, "own", "field-1");
    assert!(publish_with(&server, dir, "field-1", "field-1", r#"{"kwh": 1}"#), "{}", server.log_text());
    let (_, d) = device("field-1").await;
    assert_eq!((d["status"].as_str(), d["profile"].as_str()), (Some("active"), Some("meter")), "{d}");

    // Pending approval: created by the first connection, refused until approved.
    key_and_csr(dir, "field-2", "field-2");
    sign(dir, "stranger", "field-2");
    assert!(!publish_with(&server, dir, "field-2", "field-2", r#"{"kwh": 2}"#));
    let (_, d) = device("field-2").await;
    assert_eq!(d["status"], json!("pending-approval"), "{d}");
    let (code, _) = server.admin(Method::POST, "/api/v1/devices/field-2/approve", None).await;
    assert_eq!(code, 200);
    assert!(publish_with(&server, dir, "field-2", "field-2", r#"{"kwh": 2}"#), "{}", server.log_text());

    // Rejected: decommissioned, and stays refused.
    key_and_csr(dir, "field-3", "field-3");
    sign(dir, "stranger", "field-3");
    assert!(!publish_with(&server, dir, "field-3", "field-3", r#"{"kwh": 3}"#));
    let (code, rejected) = server.admin(Method::POST, "/api/v1/devices/field-3/reject", None).await;
    assert_eq!((code, rejected["status"].as_str()), (200, Some("decommissioned")), "{rejected}");
    assert!(!publish_with(&server, dir, "field-3", "field-3", r#"{"kwh": 3}"#));
    let (code, _) = server.admin(Method::POST, "/api/v1/devices/field-1/approve", None).await;
    assert_eq!(code, 409, "only a pending device is approved");
    // A person cannot put a device back into pending-approval.
    let (code, _) = server.admin(Method::PATCH, "/api/v1/devices/field-1", Some(json!({"status": "pending-approval"}))).await;
    assert_eq!(code, 400);

    let rows = server.query("SELECT device, kwh FROM telemetry ORDER BY kwh").await;
    assert_eq!(rows, vec![vec![json!("field-1"), json!(1.0)], vec![json!("field-2"), json!(2.0)]]);
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    let registered = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "device.auto_register").count();
    assert_eq!(registered, 3);
}

/// Regression: CAs of two tenants with the same name have the same subject; the device's own
/// tenant decides which one vouches for it.
#[tokio::test]
async fn same_named_cas_of_two_tenants_each_authenticate_their_own_devices() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let server = start(dir).await;
    for tenant in ["alpha", "beta"] {
        let (code, ca) = server.admin(Method::POST, "/api/v1/cas", Some(json!({"name": "Acme", "tenant": tenant}))).await;
        assert_eq!(code, 201, "{ca}");
        let id = format!("{tenant}-1");
        server.register_device(&id, json!({"tenant": tenant})).await;
        let (code, issued) = server.admin(Method::POST, &format!("/api/v1/devices/{id}/certificate"), Some(json!({}))).await;
        assert_eq!(code, 201, "{issued}");
        std::fs::write(dir.join(format!("{id}.pem")), issued["certificate"].as_str().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{id}.key")), issued["private_key"].as_str().unwrap()).unwrap();
    }
    for id in ["alpha-1", "beta-1"] {
        assert!(publish_with(&server, dir, id, id, r#"{"kwh": 1}"#), "{id}: {}", server.log_text());
    }
    assert_eq!(server.count("telemetry").await, 2);
}

/// `curl` against the HTTPS listener trusting the test's server CA, with `args` (a client
/// certificate, a token...). Returns (exit code, HTTP status, body).
fn curl_https(server: &TestServer, dir: &Path, args: &[&str], path: &str) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--cacert", "server-ca.pem", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("{}{path}", server.https))
        .current_dir(dir)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (out.status.code().unwrap_or(-1), status.to_string(), body.to_string())
}

#[tokio::test]
async fn https_ingest_takes_a_client_certificate_instead_of_a_token() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let server = start(dir).await;
    assert!(server.https.starts_with("https://127.0.0.1:"), "{}", server.https);
    server.register_device("meter-h", json!({})).await;
    let (status, _) = server.admin(Method::POST, "/api/v1/cas", Some(json!({"name": "Acme devices"}))).await;
    assert_eq!(status, 201);
    let (status, issued) = server.admin(Method::POST, "/api/v1/devices/meter-h/certificate", Some(json!({}))).await;
    assert_eq!(status, 201, "{issued}");
    std::fs::write(dir.join("meter-h.pem"), issued["certificate"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("meter-h.key"), issued["private_key"].as_str().unwrap()).unwrap();
    let with_cert = ["--cert", "meter-h.pem", "--key", "meter-h.key"];
    let json_post = |body: &'static str| ["-H", "Content-Type: application/json", "--data-binary", body];

    // JSON ingest and InfluxDB line protocol, no token: the certificate names the device.
    let (code, status, body) =
        curl_https(&server, dir, &[&with_cert[..], &json_post(r#"{"kwh": 1.5}"#)].concat(), "/api/v1/ingest");
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    let (code, status, body) =
        curl_https(&server, dir, &[&with_cert[..], &["--data-binary", "power kwh=2.5"]].concat(), "/api/v2/write?bucket=b");
    assert_eq!((code, status.as_str()), (0, "204"), "{body}");
    // The rest of the API is there too, for API tokens; a device certificate is not one.
    let bearer = format!("Authorization: Bearer {}", corral_testkit::ADMIN_TOKEN);
    let (_, status, body) = curl_https(&server, dir, &["-H", &bearer], "/api/v1/devices/meter-h");
    assert_eq!(status, "200", "{body}");
    let (_, status, _) = curl_https(&server, dir, &with_cert, "/api/v1/devices");
    assert_eq!(status, "401");
    // The console over HTTPS marks its cookies Secure.
    let out = Command::new("curl")
        .args(["-sS", "-i", "--cacert", "server-ca.pem"])
        .arg(format!("{}/login", server.https))
        .current_dir(dir)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.contains("set-cookie: corral_login=") && head.contains("; secure"), "{head}");
    // A token still works over HTTPS without a certificate.
    let token = server.register_device("meter-t", json!({})).await;
    let auth = format!("Authorization: Bearer {token}");
    let (_, status, body) =
        curl_https(&server, dir, &[&["-H", auth.as_str()][..], &json_post(r#"{"kwh": 3.5}"#)].concat(), "/api/v1/ingest");
    assert_eq!(status, "200", "{body}");

    // A certificate of a CA nobody registered fails the handshake; a quarantined device is refused
    // with the reason; a revoked certificate fails the handshake.
    key_and_csr(dir, "stranger-h", "meter-h");
    sign(dir, "stranger", "stranger-h");
    let (code, _, _) = curl_https(
        &server,
        dir,
        &[&["--cert", "stranger-h.pem", "--key", "stranger-h.key"][..], &json_post(r#"{"kwh": 9}"#)].concat(),
        "/api/v1/ingest",
    );
    assert_ne!(code, 0, "the handshake is refused");
    let (status, _) = server.admin(Method::PATCH, "/api/v1/devices/meter-h", Some(json!({"status": "quarantined"}))).await;
    assert_eq!(status, 200);
    let (_, status, body) = curl_https(&server, dir, &[&with_cert[..], &json_post(r#"{"kwh": 9}"#)].concat(), "/api/v1/ingest");
    assert_eq!(status, "401", "{body}");
    assert!(body.contains("client certificate: device meter-h is quarantined"), "{body}");
    let (status, _) = server.admin(Method::PATCH, "/api/v1/devices/meter-h", Some(json!({"status": "active"}))).await;
    assert_eq!(status, 200);
    let (_, listed) = server.admin(Method::GET, "/api/v1/devices/meter-h/certificates", None).await;
    let serial = listed["certificates"][0]["serial"].as_str().unwrap().to_string();
    let (status, _) = server.admin(Method::DELETE, &format!("/api/v1/devices/meter-h/certificate/{serial}"), None).await;
    assert_eq!(status, 200);
    let (code, _, _) = curl_https(&server, dir, &[&with_cert[..], &json_post(r#"{"kwh": 9}"#)].concat(), "/api/v1/ingest");
    assert_ne!(code, 0, "a revoked certificate fails the handshake");

    let rows = server.query("SELECT device, kwh FROM telemetry ORDER BY kwh").await;
    assert_eq!(rows, vec![vec![json!("meter-h"), json!(1.5)], vec![json!("meter-t"), json!(3.5)]]);
    assert_eq!(server.query("SELECT device, kwh FROM power").await, vec![vec![json!("meter-h"), json!(2.5)]]);
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    for reason in ["unknown CA", "revoked"] {
        assert!(
            metrics.contains(&format!("corral_https_handshake_failures_total{{reason=\"{reason}\"}} 1")),
            "{reason}: {metrics}"
        );
    }
}
