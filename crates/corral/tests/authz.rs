//! Roles and tenant scope on every REST route: a viewer cannot write; a tenant-scoped token sees
//! and touches only its tenant's devices and data, in the API and in SQL.

use corral_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

#[tokio::test]
async fn roles_and_tenants_are_enforced_on_every_route() {
    let server = TestServer::start(BIN).await;
    let a = server.register_device("a-1", json!({"tenant": "alpha", "site": "s1"})).await;
    let b = server.register_device("b-1", json!({"tenant": "beta", "site": "s2"})).await;
    assert_eq!(server.ingest(&a, "telemetry", r#"{"v": 1}"#).await.0, 200);
    assert_eq!(server.ingest(&b, "telemetry", r#"{"v": 2}"#).await.0, 200);

    let viewer = server.api_token("viewer", "viewer", None).await;
    let alpha_op = server.api_token("alpha-ops", "operator", Some("alpha")).await;

    // Anonymous and device tokens: 401 on every API route.
    let routes: [(Method, &str, Option<Value>); 8] = [
        (Method::GET, "/api/v1/devices", None),
        (Method::POST, "/api/v1/devices", Some(json!({"id": "x"}))),
        (Method::GET, "/api/v1/devices/a-1", None),
        (Method::PATCH, "/api/v1/devices/a-1", Some(json!({"site": "s9"}))),
        (Method::DELETE, "/api/v1/devices/a-1", None),
        (Method::POST, "/api/v1/devices/a-1/token", None),
        (Method::POST, "/api/v1/query", Some(json!({"sql": "SELECT 1"}))),
        (Method::GET, "/api/v1/tokens", None),
    ];
    for (method, path, body) in &routes {
        for bad in ["", "nonsense", a.as_str()] {
            let (status, out) = server.call(method.clone(), path, bad, body.clone()).await;
            assert_eq!(status, 401, "{method} {path} with {bad:?}: {out}");
        }
    }

    // Viewer: reads everything, writes nothing.
    assert_eq!(server.call(Method::GET, "/api/v1/devices", &viewer, None).await.0, 200);
    assert_eq!(server.call(Method::GET, "/api/v1/devices/b-1", &viewer, None).await.0, 200);
    assert_eq!(server.call(Method::POST, "/api/v1/query", &viewer, Some(json!({"sql": "SELECT 1"}))).await.0, 200);
    for (method, path, body) in [&routes[1], &routes[3], &routes[4], &routes[5]] {
        let (status, out) = server.call(method.clone(), path, &viewer, body.clone()).await;
        assert_eq!(status, 403, "viewer {method} {path}: {out}");
    }
    let (status, _) = server.call(Method::POST, "/api/v1/tokens", &viewer, Some(json!({"name": "x", "role": "admin"}))).await;
    assert_eq!(status, 403);

    // Tenant-scoped operator: its tenant only; the other tenant's device does not exist for it.
    let (status, page) = server.call(Method::GET, "/api/v1/devices", &alpha_op, None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a-1"]);
    assert_eq!(page["total"], 1);
    for (method, body) in [(Method::GET, None), (Method::PATCH, Some(json!({"site": "x"}))), (Method::DELETE, None)] {
        let (status, out) = server.call(method.clone(), "/api/v1/devices/b-1", &alpha_op, body).await;
        assert_eq!(status, 404, "{method} b-1 as alpha operator: {out}");
    }
    assert_eq!(server.call(Method::POST, "/api/v1/devices/b-1/token", &alpha_op, None).await.0, 404);
    let (status, _) = server.call(Method::POST, "/api/v1/devices", &alpha_op, Some(json!({"id": "b-2", "tenant": "beta"}))).await;
    assert_eq!(status, 403);
    let (status, out) = server.call(Method::POST, "/api/v1/devices", &alpha_op, Some(json!({"id": "a-2"}))).await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["device"]["tenant"], "alpha");
    assert_eq!(server.call(Method::PATCH, "/api/v1/devices/a-1", &alpha_op, Some(json!({"site": "s3"}))).await.0, 200);
    let (status, _) = server.call(Method::POST, "/api/v1/tokens", &alpha_op, Some(json!({"name": "x", "role": "viewer"}))).await;
    assert_eq!(status, 403);

    // SQL under tenant scope: telemetry and devices both only show alpha.
    let (status, out) = server
        .call(Method::POST, "/api/v1/query", &alpha_op, Some(json!({"sql": "SELECT device, v FROM telemetry ORDER BY device"})))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["rows"], json!([["a-1", 1.0]]));
    let (_, out) = server
        .call(Method::POST, "/api/v1/query", &alpha_op, Some(json!({"sql": "SELECT device FROM devices ORDER BY device"})))
        .await;
    assert_eq!(out["rows"], json!([["a-1"], ["a-2"]]));
    // The unscoped viewer sees both tenants.
    let (_, out) = server
        .call(Method::POST, "/api/v1/query", &viewer, Some(json!({"sql": "SELECT device, v FROM telemetry ORDER BY device"})))
        .await;
    assert_eq!(out["rows"], json!([["a-1", 1.0], ["b-1", 2.0]]));
}

#[tokio::test]
async fn pagination_walks_every_device_once() {
    let server = TestServer::start(BIN).await;
    for i in 0..25 {
        server.register_device(&format!("dev-{i:02}"), json!({"site": if i % 2 == 0 { "even" } else { "odd" }})).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/devices?site=even&limit=5&after={a}"),
            None => "/api/v1/devices?site=even&limit=5".to_string(),
        };
        let (status, page) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 13);
        seen.extend(page["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).step_by(2).map(|i| format!("dev-{i:02}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_rotated_token_keeps_working_through_its_overlap_window_then_stops() {
    let server = TestServer::start(BIN).await;
    let old = server.register_device("truck-9", json!({})).await;
    let (status, rotated) = server.admin(Method::POST, "/api/v1/devices/truck-9/token?overlap_secs=2", None).await;
    assert_eq!(status, 200, "{rotated}");
    assert!(rotated["old_token_valid_until"].is_string(), "{rotated}");
    let new = rotated["token"].as_str().unwrap().to_string();
    // Both work while the fleet moves over...
    assert_eq!(server.ingest(&old, "telemetry", r#"{"km": 1}"#).await.0, 200);
    assert_eq!(server.ingest(&new, "telemetry", r#"{"km": 2}"#).await.0, 200);
    assert_eq!(server.ingest(&old, "telemetry", r#"{"km": 3}"#).await.0, 200, "used twice: not cached beyond its end");
    // ...and the old one stops when the window ends.
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    assert_eq!(server.ingest(&old, "telemetry", r#"{"km": 4}"#).await.0, 401);
    assert_eq!(server.ingest(&new, "telemetry", r#"{"km": 5}"#).await.0, 200);
    // Without an overlap the old token stops at once.
    let (_, rotated) = server.admin(Method::POST, "/api/v1/devices/truck-9/token", None).await;
    assert_eq!(server.ingest(&new, "telemetry", r#"{"km": 6}"#).await.0, 401);
    assert_eq!(server.ingest(rotated["token"].as_str().unwrap(), "telemetry", r#"{"km": 7}"#).await.0, 200);
    assert_eq!(
        server.query("SELECT km FROM telemetry ORDER BY km").await,
        [1.0, 2.0, 3.0, 5.0, 7.0].map(|k| vec![json!(k)]).to_vec()
    );
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    let overlaps: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "device.rotate_token")
        .map(|e| e["detail"]["overlap_secs"].clone())
        .collect();
    assert_eq!(overlaps, vec![json!(0), json!(2)], "newest first, each with who and how");
}
