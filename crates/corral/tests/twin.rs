//! The device twin over HTTP: applications patch desired (roles, tenants, `If-Match`), devices
//! read it and patch reported with their own token, the delta follows, bad input stores nothing,
//! and a desired change survives `kill -9`. A profile's desired defaults reach its devices under
//! their own overrides.

use corral_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

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
    let viewer = server.api_token("viewer", "viewer", None).await;
    let alpha_op = server.api_token("alpha-ops", "operator", Some("alpha")).await;

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

async fn profile_desired(server: &TestServer, token: &str, profile: &str, patch: &str) -> (u16, Value) {
    let (status, _, out) =
        send(server, Method::PATCH, &format!("/api/v1/profiles/{profile}/twin/desired"), token, None, patch).await;
    (status, out)
}

async fn profile_defaults(server: &TestServer, token: &str, profile: &str) -> (u16, Value) {
    server.call(Method::GET, &format!("/api/v1/profiles/{profile}/twin/desired"), token, None).await
}

#[tokio::test]
async fn profile_defaults_reach_the_profiles_devices_and_a_device_override_wins() {
    let server = TestServer::start(BIN).await;
    let admin = corral_testkit::ADMIN_TOKEN;
    // Naming a profile on a device declares it in the registry.
    let plain = server.register_device("thermo-1", json!({"profile": "thermostat"})).await;
    server.register_device("thermo-2", json!({"profile": "thermostat"})).await;
    server.register_device("pump-9", json!({"profile": "pump"})).await;
    assert_eq!(twin(&server, &plain, "thermo-1").await.1["desired"]["version"], 0);
    let (status, _, out) = desired(&server, admin, "thermo-2", None, r#"{"interval_s": 10}"#).await;
    assert_eq!((status, out["version"].as_u64()), (200, Some(1)), "{out}");

    let (status, out) = profile_desired(&server, admin, "thermostat", r#"{"interval_s": 60, "led": true}"#).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!((out["profile"].as_str(), out["version"].as_u64()), (Some("thermostat"), Some(1)));
    assert_eq!(out["desired"]["document"], json!({"interval_s": 60, "led": true}));

    // The device without overrides takes the defaults as a new desired version, seen with its own token.
    let (status, out) = twin(&server, &plain, "thermo-1").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        (out["desired"]["document"].clone(), out["desired"]["version"].as_u64()),
        (json!({"interval_s": 60, "led": true}), Some(1))
    );
    // The device's own key wins; the profile's other key shows through.
    let (_, out) = twin(&server, admin, "thermo-2").await;
    assert_eq!(
        (out["desired"]["document"].clone(), out["desired"]["version"].as_u64()),
        (json!({"interval_s": 10, "led": true}), Some(2))
    );
    assert_eq!(out["desired_overrides"], json!({"interval_s": 10}));
    // Another profile's device is untouched.
    assert_eq!(twin(&server, admin, "pump-9").await.1["desired"], json!({"document": {}, "version": 0, "updated_at_ms": {}}));

    // A default under an override changes nothing for that device; null deletes a default.
    assert_eq!(profile_desired(&server, admin, "thermostat", r#"{"interval_s": 120, "led": null}"#).await.0, 200);
    let (_, out) = twin(&server, admin, "thermo-1").await;
    assert_eq!((out["desired"]["document"].clone(), out["desired"]["version"].as_u64()), (json!({"interval_s": 120}), Some(2)));
    let (_, out) = twin(&server, admin, "thermo-2").await;
    assert_eq!((out["desired"]["document"].clone(), out["desired"]["version"].as_u64()), (json!({"interval_s": 10}), Some(3)));

    // Any application reads the defaults; a device registered later starts from them.
    let viewer = server.api_token("viewer", "viewer", Some("default")).await;
    let (status, out) = profile_defaults(&server, &viewer, "thermostat").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!((out["desired"]["document"].clone(), out["version"].as_u64()), (json!({"interval_s": 120}), Some(2)));
    let late = server.register_device("thermo-3", json!({"profile": "thermostat"})).await;
    assert_eq!(twin(&server, &late, "thermo-3").await.1["desired"]["document"], json!({"interval_s": 120}));

    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    assert!(audit.to_string().contains("profile.desired"), "{audit}");
}

#[tokio::test]
async fn profile_defaults_refuse_viewers_scoped_tokens_unknown_profiles_and_bad_patches() {
    let server = TestServer::start(BIN).await;
    let admin = corral_testkit::ADMIN_TOKEN;
    let device = server.register_device("valve-1", json!({"profile": "valve", "tenant": "alpha"})).await;
    let viewer = server.api_token("viewer", "viewer", None).await;
    let alpha_admin = server.api_token("alpha-admin", "admin", Some("alpha")).await;
    let operator = server.api_token("ops", "operator", None).await;

    let (status, out) = profile_desired(&server, &viewer, "valve", r#"{"open": true}"#).await;
    assert_eq!(status, 403, "a viewer may not change profile defaults: {out}");
    // Profiles are shared by every tenant: a scoped token would reach into the others' devices.
    assert_eq!(profile_desired(&server, &alpha_admin, "valve", r#"{"open": true}"#).await.0, 403);
    assert_eq!(profile_desired(&server, &device, "valve", r#"{"open": true}"#).await.0, 401);
    assert_eq!(profile_defaults(&server, &device, "valve").await.0, 401);
    assert_eq!(profile_desired(&server, admin, "nobody", r#"{"open": true}"#).await.0, 404);
    assert_eq!(profile_defaults(&server, admin, "nobody").await.0, 404);
    // Defaults cannot be compare-and-set yet: If-Match is refused, not silently ignored.
    let (status, _, out) =
        send(&server, Method::PATCH, "/api/v1/profiles/valve/twin/desired", admin, Some("0"), r#"{"open": true}"#).await;
    assert_eq!(status, 400, "{out}");

    for bad in [r#"{"open": "#, "[1, 2]", "42", "", r#"{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":{}}}}}}}}}}}"#] {
        let (status, out) = profile_desired(&server, admin, "valve", bad).await;
        assert_eq!(status, 400, "{bad:?}: {out}");
    }
    let big = json!({ "blob": "x".repeat(40 * 1024) }).to_string();
    assert_eq!(profile_desired(&server, admin, "valve", &big).await.0, 413);

    // Nothing of the refused patches was stored, for the profile or for its device.
    let (status, out) = profile_defaults(&server, &viewer, "valve").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!((out["desired"]["document"].clone(), out["version"].as_u64()), (json!({}), Some(0)));
    assert_eq!(twin(&server, &device, "valve-1").await.1["desired"]["version"], 0);

    // An unscoped operator may, as it may change the profile itself.
    let (status, out) = profile_desired(&server, &operator, "valve", r#"{"open": false}"#).await;
    assert_eq!((status, out["version"].as_u64()), (200, Some(1)), "{out}");
    assert_eq!(twin(&server, &device, "valve-1").await.1["desired"]["document"], json!({"open": false}));
}

/// `POST /api/v1/query` with `token`: the status, and the rows (or the error).
async fn sql(server: &TestServer, token: &str, sql: &str) -> (u16, Value) {
    let (status, out) = server.call(Method::POST, "/api/v1/query", token, Some(json!({"sql": sql}))).await;
    (status, if status == 200 { out["rows"].clone() } else { out })
}

#[tokio::test]
async fn sql_finds_devices_whose_reported_firmware_is_not_the_desired_one_within_the_tenant() {
    let server = TestServer::start(BIN).await;
    let admin = corral_testkit::ADMIN_TOKEN;
    let behind = server.register_device("truck-1", json!({"tenant": "alpha"})).await;
    let current = server.register_device("truck-2", json!({"tenant": "alpha"})).await;
    for (device, token, fw) in [("truck-1", &behind, "2.0"), ("truck-2", &current, "2.1")] {
        assert_eq!(desired(&server, admin, device, None, r#"{"fw": "2.1", "interval_s": 30}"#).await.0, 200);
        let (status, out) =
            reported(&server, token, device, &json!({"fw": fw, "interval_s": 30, "battery": 80}).to_string()).await;
        assert_eq!(status, 200, "{out}");
    }
    let behind_sql = "SELECT t.device FROM twins t JOIN devices d ON d.device = t.device \
                      WHERE json_get_str(t.reported, 'fw') <> json_get_str(t.desired, 'fw') ORDER BY 1";
    assert_eq!(sql(&server, admin, behind_sql).await, (200, json!([["truck-1"]])));

    // The documents are JSON text, the versions integers, a side's time its latest change.
    let (status, rows) = sql(
        &server,
        admin,
        "SELECT tenant, profile, desired_version, reported_version, delta, json_get_int(reported, 'battery'), \
         desired_updated_at IS NOT NULL AND reported_updated_at >= desired_updated_at FROM twins WHERE device = 'truck-1'",
    )
    .await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows, json!([["alpha", null, 1, 1, r#"{"fw":"2.1"}"#, 80, true]]));

    // Another tenant's device, behind too: the unscoped query sees it, alpha's token never does.
    let other = server.register_device("truck-9", json!({"tenant": "beta"})).await;
    assert_eq!(desired(&server, admin, "truck-9", None, r#"{"fw": "2.1"}"#).await.0, 200);
    assert_eq!(reported(&server, &other, "truck-9", r#"{"fw": "1.0"}"#).await.0, 200);
    assert_eq!(sql(&server, admin, behind_sql).await, (200, json!([["truck-1"], ["truck-9"]])));
    let alpha = server.api_token("alpha-viewer", "viewer", Some("alpha")).await;
    assert_eq!(sql(&server, &alpha, behind_sql).await, (200, json!([["truck-1"]])));
    assert_eq!(sql(&server, &alpha, "SELECT device FROM twins ORDER BY 1").await, (200, json!([["truck-1"], ["truck-2"]])));
    let beta = server.api_token("beta-viewer", "viewer", Some("beta")).await;
    assert_eq!(sql(&server, &beta, "SELECT device, tenant FROM twins").await, (200, json!([["truck-9", "beta"]])));
}
