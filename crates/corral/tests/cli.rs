//! The command line as a user types it: `corral device|token|sql|config|ca` against a live server,
//! and the README's curl tour.

use corral_testkit::{ADMIN_TOKEN, TestServer};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

fn corral(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    server.cli(args)
}

#[tokio::test]
async fn device_token_and_sql_commands_work_end_to_end() {
    let server = TestServer::start(BIN).await;
    let (ok, out, err) = corral(
        &server,
        &["device", "add", "pump-1", "--site", "plant-a", "--profile", "pump", "--attr", "rated_kw=7.5", "--tag", "critical"],
    );
    assert!(ok, "{err}");
    let token = out.lines().find_map(|l| l.strip_prefix("token (shown once): ")).expect(&out).to_string();
    assert!(token.starts_with("cdt_"), "{out}");
    assert_eq!(server.ingest(&token, "telemetry", r#"{"flow": 12.5}"#).await.0, 200);

    let (ok, out, err) = corral(&server, &["device", "list", "--site", "plant-a"]);
    assert!(ok, "{err}");
    assert!(out.contains("pump-1") && out.contains("(1 of 1 devices)"), "{out}");
    let (ok, out, _) = corral(&server, &["device", "list", "--json"]);
    assert!(ok);
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["devices"][0]["attributes"]["rated_kw"], 7.5);

    let (ok, out, err) = corral(&server, &["sql", "SELECT device, flow FROM telemetry"]);
    assert!(ok, "{err}");
    assert!(out.contains("pump-1") && out.contains("12.5") && out.contains("(1 rows)"), "{out}");
    let (ok, out, _) = corral(&server, &["sql", "--format", "csv", "SELECT device, flow FROM telemetry"]);
    assert!(ok);
    assert_eq!(out, "device,flow\npump-1,12.5\n");
    let (ok, _, err) = corral(&server, &["sql", "SELECT nope FROM telemetry"]);
    assert!(!ok && err.contains("400") && err.contains("nope"), "{err}");

    let (ok, out, err) = corral(&server, &["token", "create", "--name", "grafana", "--role", "viewer"]);
    assert!(ok, "{err}");
    let viewer = out.trim().strip_prefix("token (shown once): ").expect(&out).to_string();
    let out = Command::new(BIN)
        .args(["device", "rm", "pump-1"])
        .env("CORRAL_URL", &server.base)
        .env("CORRAL_TOKEN", &viewer)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a viewer decommissioned a device");
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));

    let (ok, _, err) = corral(&server, &["device", "rm", "pump-1"]);
    assert!(ok, "{err}");
    let (ok, out, _) = corral(&server, &["device", "show", "pump-1"]);
    assert!(ok);
    assert!(out.contains("\"decommissioned\""), "{out}");
}

#[test]
fn config_prints_the_effective_settings_with_their_sources_applied() {
    let out = Command::new(BIN).args(["config", "--persist-mb", "32"]).env("CORRAL_HTTP", "127.0.0.1:9999").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("http = \"127.0.0.1:9999\""), "{text}");
    assert!(text.contains("persist_mb = 32"), "{text}");
    assert!(text.contains("buffer_ceiling_mb = 256"), "{text}");
    // The flag beats the environment.
    let out = Command::new(BIN).args(["config", "--http", "127.0.0.1:1"]).env("CORRAL_HTTP", "127.0.0.1:9999").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("http = \"127.0.0.1:1\""));
}

/// Runs curl with `args`; returns the HTTP status and the body.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-sS", "-w", "\\n%{http_code}"]).args(args).output().expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.to_string(), body.to_string())
}

/// The README's tour, with curl: what a newcomer runs must keep working.
#[tokio::test]
async fn readme_curl_tour() {
    let server = TestServer::start(BIN).await;
    let url = |path: &str| server.url(path);
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let json = "Content-Type: application/json";
    let device = r#"{"id": "reefer-42", "profile": "reefer", "site": "rotterdam", "attributes": {"cargo": "vaccines"}}"#;
    let (code, body) = curl(&[&url("/api/v1/devices"), "-H", &auth, "-H", json, "-d", device]);
    assert_eq!(code, "201", "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"].as_str().unwrap().to_string();

    let device_auth = format!("Authorization: Bearer {token}");
    let reading = r#"{"temperature": 4.2, "door_open": false}"#;
    let (code, body) = curl(&[&url("/api/v1/ingest"), "-H", &device_auth, "-H", json, "-d", reading]);
    assert_eq!(code, "200", "{body}");

    let sql =
        r#"{"sql": "SELECT d.site, avg(t.temperature) AS avg_t FROM telemetry t JOIN devices d USING (device) GROUP BY d.site"}"#;
    let (code, body) = curl(&[&url("/api/v1/query"), "-H", &auth, "-d", sql]);
    assert_eq!(code, "200", "{body}");
    let out: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(out["rows"], serde_json::json!([["rotterdam", 4.2]]));

    // The console: a visitor is sent to sign in.
    let (code, _) = curl(&[&url("/")]);
    assert_eq!(code, "303");
    let (code, body) = curl(&[&url("/login")]);
    assert_eq!(code, "200");
    assert!(body.contains("<title>Sign in · Corral</title>"), "{body}");

    let (code, body) = curl(&[&url("/metrics")]);
    assert_eq!(code, "200");
    assert!(body.contains("corral_ingest_rows_total{table=\"telemetry\"} 1"), "{body}");
    assert!(body.contains("corral_wal_fsync_seconds_bucket"), "{body}");
    assert!(body.contains("corral_http_requests_total{status=\"201\"} 1"), "{body}");
}

#[tokio::test]
async fn ca_commands_issue_list_and_revoke_device_certificates() {
    let server = TestServer::start(BIN).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).display().to_string();
    let (ok, out, err) = corral(&server, &["ca", "create", "--name", "Plant devices"]);
    assert!(ok && out.starts_with("created CA ca-"), "{out}{err}");
    let (ok, _, err) = corral(&server, &["device", "add", "valve-1"]);
    assert!(ok, "{err}");
    let (ok, out, err) =
        corral(&server, &["ca", "issue", "valve-1", "--cert-out", &path("valve-1.pem"), "--key-out", &path("valve-1.key")]);
    assert!(ok, "{err}");
    assert!(out.contains("mode 0600") && out.contains("serial "), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(path("valve-1.key")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(path("valve-1.pem")).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    let serial = out.split("serial ").nth(1).and_then(|s| s.split(',').next()).unwrap().to_string();
    let (ok, out, _) = corral(&server, &["ca", "certs", "valve-1"]);
    assert!(ok && out.contains(&serial), "{out}");
    let (ok, out, err) = corral(&server, &["ca", "revoke", "valve-1", &serial]);
    assert!(ok && out.contains("revoked certificate"), "{out}{err}");
    let (ok, _, err) = corral(&server, &["ca", "revoke", "valve-1", &serial]);
    assert!(!ok && err.contains("404"), "revoked twice: {err}");
    let (ok, out, _) = corral(&server, &["ca", "list"]);
    assert!(ok && out.contains("Plant devices"), "{out}");
    let (ok, out, err) = corral(&server, &["device", "rotate-token", "valve-1", "--overlap-secs", "60"]);
    assert!(ok && out.contains("the old token works until"), "{out}{err}");

    // Pre-shared keys for CoAP over DTLS: generated (shown once), given, removed.
    let (ok, out, err) = corral(&server, &["device", "psk", "valve-1"]);
    assert!(ok && out.contains("PSK identity: valve-1") && out.contains("key (shown once): "), "{out}{err}");
    let (ok, out, err) = corral(&server, &["device", "psk", "valve-1", "--key", "factory-key-0001", "--json"]);
    let out: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    assert!(ok && out["key_hex"] == "666163746f72792d6b65792d30303031" && out["generated"] == false, "{out}");
    let (ok, _, err) = corral(&server, &["device", "psk", "valve-1", "--key", "short"]);
    assert!(!ok && err.contains("16 to 64 bytes"), "{err}");
    let (ok, out, err) = corral(&server, &["device", "psk", "valve-1", "--remove"]);
    assert!(ok && out.contains("valve-1 has no pre-shared key now"), "{out}{err}");
    let (ok, _, err) = corral(&server, &["device", "psk", "valve-1", "--remove"]);
    assert!(!ok && err.contains("404"), "{err}");
}

#[tokio::test]
async fn user_commands_add_change_list_and_remove_console_users() {
    let server = TestServer::start(BIN).await;
    let (ok, out, err) = corral(&server, &["user", "add", "alice", "--role", "operator", "--tenant", "acme"]);
    assert!(ok && out.contains("added alice (operator)"), "{out}{err}");
    let generated =
        out.lines().find_map(|l| l.strip_prefix("password (shown once): ")).expect("a generated password").to_string();
    assert_eq!(generated.len(), 20);
    // From standard input, as a script would; too short is refused with the rule.
    let add_with = |name: &str, password: &str| {
        let mut child = Command::new(BIN)
            .args(["user", "add", name, "--role", "viewer", "--password-stdin"])
            .env("CORRAL_URL", &server.base)
            .env("CORRAL_TOKEN", ADMIN_TOKEN)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, out) = add_with("bob", "short");
    assert!(!ok && out.contains("at least 12 characters"), "{out}");
    let (ok, out) = add_with("bob", "a long enough passphrase");
    assert!(ok && !out.contains("shown once"), "{out}");
    let (ok, out, err) = corral(&server, &["user", "list"]);
    assert!(ok && out.contains("alice") && out.contains("acme") && out.contains("bob") && out.contains("admin"), "{out}{err}");
    let (ok, out, err) = corral(&server, &["user", "passwd", "bob"]);
    assert!(ok && out.contains("new password (shown once): "), "{out}{err}");
    let (ok, out, err) = corral(&server, &["user", "rm", "bob", "--json"]);
    assert!(ok && out.contains(r#""removed":"bob""#), "{out}{err}");
    let (ok, _, err) = corral(&server, &["user", "rm", "bob"]);
    assert!(!ok && err.contains("404"), "{err}");
}
