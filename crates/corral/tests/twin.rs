//! The device twin over HTTP: applications patch desired (roles, tenants, `If-Match`), devices
//! read it and patch reported with their own token, the delta follows, bad input stores nothing,
//! and a desired change survives `kill -9`.

use corral_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

async fn token(server: &TestServer, name: &str, role: &str, tenant: Option<&str>) -> String {
    let (status, out) =
        server.admin(Method::POST, "/api/v1/tokens", Some(json!({"name": name, "role": role, "tenant": tenant}))).await;
    assert_eq!(status, 201, "{out}");
    out["token"].as_str().unwrap().to_string()
}

/// A request with a raw body and optional `If-Match`; returns the status, the `ETag` and the body.
async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    if_match: Option<&str>,
    body: &str,
) -> (u16, Option<String>, Value) {
    let mut request = server.http.request(method, server.url(path)).bearer_auth(token);
    if let Some(version) = if_match {
        request = request.header("if-match", version);
    }
    if !body.is_empty() {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = response.text().await.expect("body");
    (status, etag, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn desired(
    server: &TestServer,
    token: &str,
    device: &str,
    if_match: Option<&str>,
    patch: &str,
) -> (u16, Option<String>, Value) {
    send(server, Method::PATCH, &format!("/api/v1/devices/{device}/twin/desired"), token, if_match, patch).await
}

async fn reported(server: &TestServer, token: &str, device: &str, patch: &str) -> (u16, Value) {
    let (status, _, out) =
        send(server, Method::PATCH, &format!("/api/v1/devices/{device}/twin/reported"), token, None, patch).await;
    (status, out)
}

async fn twin(server: &TestServer, token: &str, device: &str) -> (u16, Value) {
    server.call(Method::GET, &format!("/api/v1/devices/{device}/twin"), token, None).await
}

#[tokio::test]
async fn desired_reaches_the_device_reported_merges_and_the_delta_follows() {
    let server = TestServer::start(BIN).await;
    let truck = server.register_device("truck-7", json!({})).await;
    let admin = corral_testkit::ADMIN_TOKEN;

    let (status, etag, out) = desired(&server, admin, "truck-7", None, r#"{"interval_s": 30, "fw": "2.1"}"#).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!((out["version"].as_u64(), etag.as_deref()), (Some(1), Some("\"1\"")));

    // The device reads its desired document with its own token.
    let (status, out) = twin(&server, &truck, "truck-7").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["desired"]["document"], json!({"interval_s": 30, "fw": "2.1"}));
    assert_eq!(out["desired"]["version"], 1);

    // Reported merges; null deletes; the delta is what is still to do.
    assert_eq!(reported(&server, &truck, "truck-7", r#"{"interval_s": 30, "fw": "2.0", "battery": 80}"#).await.0, 200);
    let (status, out) = reported(&server, &truck, "truck-7", r#"{"battery": null, "rssi": -70}"#).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["reported"]["document"], json!({"interval_s": 30, "fw": "2.0", "rssi": -70}));
    assert_eq!(out["version"], 2);
    let (_, out) = twin(&server, admin, "truck-7").await;
    assert_eq!(out["delta"], json!({"fw": "2.1"}));
    assert_eq!(reported(&server, &truck, "truck-7", r#"{"fw": "2.1"}"#).await.0, 200);
    assert_eq!(twin(&server, admin, "truck-7").await.1["delta"], json!({}));

    // The change is audited with who made it.
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    assert!(audit.to_string().contains("twin.desired"), "{audit}");
}

#[tokio::test]
async fn a_stale_if_match_is_412_and_changes_nothing() {
    let server = TestServer::start(BIN).await;
    server.register_device("pump-1", json!({})).await;
    let admin = corral_testkit::ADMIN_TOKEN;
    assert_eq!(desired(&server, admin, "pump-1", Some("0"), r#"{"rpm": 100}"#).await.0, 200);
    let (status, etag, out) = desired(&server, admin, "pump-1", Some("\"1\""), r#"{"rpm": 200}"#).await;
    assert_eq!((status, etag.as_deref()), (200, Some("\"2\"")), "{out}");

    let (status, _, out) = desired(&server, admin, "pump-1", Some("1"), r#"{"rpm": 300}"#).await;
    assert_eq!(status, 412, "{out}");
    let (_, out) = twin(&server, admin, "pump-1").await;
    assert_eq!((out["desired"]["document"]["rpm"].as_u64(), out["desired"]["version"].as_u64()), (Some(200), Some(2)));
}

#[tokio::test]
async fn roles_tenants_and_device_tokens_are_enforced() {
    let server = TestServer::start(BIN).await;
    let a = server.register_device("a-1", json!({"tenant": "alpha"})).await;
    let b = server.register_device("b-1", json!({"tenant": "beta"})).await;
    let viewer = token(&server, "viewer", "viewer", None).await;
    let alpha_op = token(&server, "alpha-ops", "operator", Some("alpha")).await;

    let (status, _, out) = desired(&server, &viewer, "a-1", None, r#"{"x": 1}"#).await;
    assert_eq!(status, 403, "viewer may not patch desired: {out}");
    assert_eq!(twin(&server, &viewer, "a-1").await.0, 200, "but may read");

    // Another tenant's device does not exist for a scoped token, to read or to write.
    assert_eq!(twin(&server, &alpha_op, "b-1").await.0, 404);
    assert_eq!(desired(&server, &alpha_op, "b-1", None, r#"{"x": 1}"#).await.0, 404);
    assert_eq!(desired(&server, &alpha_op, "a-1", None, r#"{"x": 1}"#).await.0, 200);
    assert_eq!(twin(&server, &alpha_op, "nobody").await.0, 404);

    // A device token speaks for its own device only, and never for the application side.
    assert_eq!(twin(&server, &a, "b-1").await.0, 403);
    assert_eq!(reported(&server, &a, "b-1", r#"{"x": 1}"#).await.0, 403);
    assert_eq!(desired(&server, &a, "a-1", None, r#"{"x": 2}"#).await.0, 401);
    assert_eq!(reported(&server, &alpha_op, "a-1", r#"{"x": 1}"#).await.0, 401);
    assert_eq!(reported(&server, &b, "b-1", r#"{"x": 1}"#).await.0, 200);
    assert_eq!(twin(&server, "", "a-1").await.0, 401);
}

#[tokio::test]
async fn malformed_or_oversized_patches_are_refused_and_nothing_is_stored() {
    let server = TestServer::start(BIN).await;
    let dev = server.register_device("dev-1", json!({})).await;
    let admin = corral_testkit::ADMIN_TOKEN;
    for bad in [r#"{"x": "#, "[1, 2]", "42", ""] {
        let (status, _, out) = desired(&server, admin, "dev-1", None, bad).await;
        assert_eq!(status, 400, "desired {bad:?}: {out}");
        let (status, out) = reported(&server, &dev, "dev-1", bad).await;
        assert_eq!(status, 400, "reported {bad:?}: {out}");
    }
    // Over the twin's 32 KiB default document limit, well under the HTTP body limit.
    let big = json!({ "blob": "x".repeat(40 * 1024) }).to_string();
    assert_eq!(desired(&server, admin, "dev-1", None, &big).await.0, 413);
    assert_eq!(reported(&server, &dev, "dev-1", &big).await.0, 413);

    let (_, out) = twin(&server, admin, "dev-1").await;
    assert_eq!((out["desired"]["version"].as_u64(), out["reported"]["version"].as_u64()), (Some(0), Some(0)), "{out}");
}

#[tokio::test]
async fn a_desired_change_survives_kill_9() {
    let mut server = TestServer::start(BIN).await;
    let dev = server.register_device("meter-3", json!({})).await;
    let (status, _, out) = desired(&server, corral_testkit::ADMIN_TOKEN, "meter-3", None, r#"{"tariff": "night"}"#).await;
    assert_eq!(status, 200, "{out}");
    server.restart();
    let (status, out) = twin(&server, &dev, "meter-3").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!((out["desired"]["document"].clone(), out["desired"]["version"].as_u64()), (json!({"tariff": "night"}), Some(1)));
}
