//! Bad input gets its status and a message naming what was wrong, and nothing from that request
//! is stored (checked with a count query after each).

use corral_testkit::TestServer;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

async fn assert_rejected(server: &TestServer, token: &str, body: &str, content_type: &str, status: u16, needle: &str) {
    let (got, out) = server.ingest_as(token, "telemetry", body, content_type).await;
    assert_eq!(got, status, "body {body:.80}: {out}");
    let message = out["error"].as_str().unwrap_or_else(|| panic!("no error message in {out}"));
    assert!(message.contains(needle), "expected {needle:?} in {message:?}");
}

#[tokio::test]
async fn each_bad_request_is_refused_whole_with_a_clear_message() {
    let server = TestServer::start_with(BIN, &["--max-body-bytes", "4096"]).await;
    let token = server.register_device("d1", json!({})).await;
    let (status, _) = server.ingest(&token, "telemetry", r#"{"temperature": 20.5, "mode": "eco"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(server.count("telemetry").await, 1);

    assert_rejected(&server, &token, r#"{"temperature": 20.5,"#, "application/json", 400, "line 1").await;
    assert_rejected(&server, &token, r#"[{"bn": 5, "n": "x", "v": 1}]"#, "application/senml+json", 400, "bn").await;
    // A type conflict in the third message: the first two (valid) must not be stored either.
    let conflict = r#"[{"temperature": 1}, {"temperature": 2}, {"temperature": "hot"}]"#;
    assert_rejected(&server, &token, conflict, "application/json", 400, "temperature").await;
    // Two new fields, one of which conflicts inside the request: no half-created columns matter.
    assert_rejected(&server, &token, r#"[{"new_a": 1}, {"new_a": true}]"#, "application/json", 400, "new_a").await;
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(5000));
    assert_rejected(&server, &token, &big, "application/json", 413, "limit").await;
    assert_rejected(&server, "cdt_wrong", r#"{"temperature": 1}"#, "application/json", 401, "token").await;
    assert_rejected(&server, &token, r#"{"time": 1}"#, "application/json", 400, "time").await;

    assert_eq!(server.count("telemetry").await, 1, "a rejected request stored something");
    let rows = server.query("SELECT temperature, mode FROM telemetry").await;
    assert_eq!(rows, vec![vec![json!(20.5), json!("eco")]]);
}

#[tokio::test]
async fn timestamps_over_too_many_days_are_refused() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("d1", json!({})).await;
    let scattered = json!((0..401).map(|d| json!({"ts": d as i64 * 86_400_000, "t": 1})).collect::<Vec<_>>());
    assert_rejected(&server, &token, &scattered.to_string(), "application/json", 400, "UTC days").await;
    let year = json!((0..365).map(|d| json!({"ts": d as i64 * 86_400_000, "t": 1})).collect::<Vec<_>>());
    assert_eq!(server.ingest(&token, "telemetry", &year.to_string()).await.0, 200);
    assert_eq!(server.count("telemetry").await, 365);
}

#[tokio::test]
async fn strangers_are_refused_before_their_body_is_read() {
    let server = TestServer::start_with(BIN, &["--max-body-bytes", "4096"]).await;
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(50_000));
    let (status, out) = server.ingest("cdt_unknown", "telemetry", &big).await;
    assert_eq!(status, 401, "{out}");
}

#[tokio::test]
async fn a_rotated_token_stops_working_at_once() {
    let server = TestServer::start(BIN).await;
    let old = server.register_device("d1", json!({})).await;
    assert_eq!(server.ingest(&old, "telemetry", r#"{"x": 1}"#).await.0, 200);
    let (status, out) = server.admin(reqwest::Method::POST, "/api/v1/devices/d1/token", None).await;
    assert_eq!(status, 200, "{out}");
    let new = out["token"].as_str().unwrap().to_string();
    assert_rejected(&server, &old, r#"{"x": 2}"#, "application/json", 401, "token").await;
    assert_eq!(server.ingest(&new, "telemetry", r#"{"x": 3}"#).await.0, 200);
    let rows = server.query("SELECT x FROM telemetry ORDER BY x").await;
    assert_eq!(rows, vec![vec![json!(1.0)], vec![json!(3.0)]]);
}

#[tokio::test]
async fn quarantined_and_decommissioned_devices_are_refused() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("d1", json!({})).await;
    let (status, _) = server.admin(reqwest::Method::PATCH, "/api/v1/devices/d1", Some(json!({"status": "quarantined"}))).await;
    assert_eq!(status, 200);
    assert_rejected(&server, &token, r#"{"x": 1}"#, "application/json", 403, "quarantined").await;
    let (status, _) = server.admin(reqwest::Method::PATCH, "/api/v1/devices/d1", Some(json!({"status": "active"}))).await;
    assert_eq!(status, 200);
    assert_eq!(server.ingest(&token, "telemetry", r#"{"x": 1}"#).await.0, 200);
    let (status, _) = server.admin(reqwest::Method::DELETE, "/api/v1/devices/d1", None).await;
    assert_eq!(status, 200);
    let (status, _) = server.ingest(&token, "telemetry", r#"{"x": 2}"#).await;
    assert!(status == 401 || status == 403, "decommissioned device got {status}");
    assert_eq!(server.count("telemetry").await, 1);
}

#[tokio::test]
async fn bad_names_and_unknown_routes_are_explained() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("d1", json!({})).await;
    let (status, out) = server.ingest(&token, "devices", r#"{"x": 1}"#).await;
    assert_eq!(status, 400, "{out}");
    let (status, out) = server.admin(reqwest::Method::POST, "/api/v1/devices", Some(json!({"id": "bad/id"}))).await;
    assert_eq!(status, 400, "{out}");
    let (status, out) = server.admin(reqwest::Method::POST, "/api/v1/devices", Some(json!({"id": "d2", "colour": "red"}))).await;
    assert_eq!(status, 400, "{out}");
    assert!(out["error"].as_str().unwrap().contains("colour"), "{out}");
    let (status, _) = server.admin(reqwest::Method::POST, "/api/v1/devices", Some(json!({"id": "d1"}))).await;
    assert_eq!(status, 409);
    let (status, out) = server.admin(reqwest::Method::GET, "/api/v1/nothing", None).await;
    assert_eq!(status, 404, "{out}");
}
