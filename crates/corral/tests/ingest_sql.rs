//! Register → ingest (JSON, SenML) → SQL returns exactly what was sent; telemetry joins `devices`.

use corral_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

#[tokio::test]
async fn json_round_trips_values_types_and_times() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("reefer-1", json!({"site": "rotterdam", "profile": "reefer"})).await;
    let body = r#"[
        {"ts": "2026-11-21T10:00:00Z", "temperature": 4.25, "door_open": false, "mode": "eco", "gps": {"lat": 51.9, "lon": 4.4}},
        {"ts": 1795255260123, "temperature": -1, "door_open": true, "mode": "defrost"},
        {"ts": "2026-11-21T11:00:00.123456789+01:00", "temperature": 3}
    ]"#;
    let (status, out) = server.ingest(&token, "telemetry", body).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["rows"], 3);
    assert_eq!(out["values"], 9);

    let (status, out) = server
        .admin(
            Method::POST,
            "/api/v1/query",
            Some(json!({"sql":
            "SELECT time, device, temperature, door_open, mode, \"gps.lat\", \"gps.lon\" FROM telemetry ORDER BY time"})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["columns"], json!(["time", "device", "temperature", "door_open", "mode", "gps.lat", "gps.lon"]));
    assert_eq!(out["types"], json!(["timestamp", "string", "float", "boolean", "string", "float", "float"]));
    assert_eq!(
        out["rows"],
        json!([
            ["2026-11-21T10:00:00Z", "reefer-1", 4.25, false, "eco", 51.9, 4.4],
            ["2026-11-21T10:00:00.123456789Z", "reefer-1", 3.0, null, null, null, null],
            ["2026-11-21T10:01:00.123Z", "reefer-1", -1.0, true, "defrost", null, null],
        ])
    );
}

#[tokio::test]
async fn senml_base_fields_resolve_into_rows() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("meter-1", json!({})).await;
    let pack = r#"[
        {"bn": "urn:dev:meter-1:", "bt": 1795255200, "bu": "A", "n": "current", "v": 1.5},
        {"n": "voltage", "u": "V", "v": 230},
        {"n": "current", "t": 10, "v": 1.7},
        {"n": "label", "vs": "main"}
    ]"#;
    let (status, out) = server.ingest_as(&token, "power", pack, "application/senml+json").await;
    assert_eq!(status, 200, "{out}");
    let rows = server
        .query("SELECT time, \"urn:dev:meter-1:current\", \"urn:dev:meter-1:voltage\", \"urn:dev:meter-1:label\" FROM power ORDER BY time")
        .await;
    assert_eq!(
        rows,
        vec![
            vec![json!("2026-11-21T10:00:00Z"), json!(1.5), json!(230.0), json!("main")],
            vec![json!("2026-11-21T10:00:10Z"), json!(1.7), Value::Null, Value::Null],
        ]
    );
}

#[tokio::test]
async fn telemetry_joins_the_registry_and_csv_is_available() {
    let server = TestServer::start(BIN).await;
    for (id, site, temps) in [("a1", "north", [1.0, 3.0]), ("a2", "north", [5.0, 7.0]), ("b1", "south", [10.0, 20.0])] {
        let token = server.register_device(id, json!({"site": site})).await;
        for t in temps {
            let (status, out) = server.ingest(&token, "telemetry", &json!({"temperature": t}).to_string()).await;
            assert_eq!(status, 200, "{out}");
        }
    }
    let rows = server
        .query("SELECT d.site, avg(t.temperature) AS avg_t, count(*) AS n FROM telemetry t JOIN devices d USING (device) GROUP BY d.site ORDER BY d.site")
        .await;
    assert_eq!(rows, vec![vec![json!("north"), json!(4.0), json!(4)], vec![json!("south"), json!(15.0), json!(2)]]);

    let csv = server
        .http
        .post(server.url("/api/v1/query"))
        .bearer_auth(corral_testkit::ADMIN_TOKEN)
        .header("Accept", "text/csv")
        .json(&json!({"sql": "SELECT device, site FROM devices ORDER BY device"}))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(csv.text().await.unwrap(), "device,site\na1,north\na2,north\nb1,south\n");
}

#[tokio::test]
async fn ingest_updates_last_seen_and_row_limit_truncates() {
    let server = TestServer::start_with(BIN, &["--max-query-rows", "2"]).await;
    let token = server.register_device("s1", json!({})).await;
    let (_, before) = server.admin(Method::GET, "/api/v1/devices/s1", None).await;
    assert_eq!(before["last_seen"], Value::Null);
    let (status, _) = server.ingest(&token, "telemetry", r#"[{"x":1},{"x":2},{"x":3}]"#).await;
    assert_eq!(status, 200);
    let (_, after) = server.admin(Method::GET, "/api/v1/devices/s1", None).await;
    assert!(after["last_seen"].is_string(), "{after}");

    let (status, out) = server.admin(Method::POST, "/api/v1/query", Some(json!({"sql": "SELECT x FROM telemetry"}))).await;
    assert_eq!(status, 200);
    assert_eq!(out["row_count"], 2);
    assert_eq!(out["truncated"], true);
}

#[tokio::test]
async fn bad_sql_is_a_400_with_the_engine_message_and_writes_are_refused() {
    let server = TestServer::start(BIN).await;
    let (status, out) = server.admin(Method::POST, "/api/v1/query", Some(json!({"sql": "SELEC 1"}))).await;
    assert_eq!(status, 400);
    assert!(out["error"].as_str().unwrap().contains("SELEC"), "{out}");
    let (status, out) = server.admin(Method::POST, "/api/v1/query", Some(json!({"sql": "SELECT * FROM nowhere"}))).await;
    assert_eq!(status, 400);
    assert!(out["error"].as_str().unwrap().contains("nowhere"), "{out}");
    for sql in ["CREATE TABLE x AS SELECT 1", "COPY (SELECT 1) TO '/tmp/corral-copy-test.csv'", "INSERT INTO devices VALUES (1)"]
    {
        let (status, out) = server.admin(Method::POST, "/api/v1/query", Some(json!({"sql": sql}))).await;
        assert_eq!(status, 400, "{sql}: {out}");
    }
    assert!(!std::path::Path::new("/tmp/corral-copy-test.csv").exists());
}

#[tokio::test]
async fn a_query_over_its_timeout_is_stopped_with_503() {
    let server = TestServer::start_with(BIN, &["--query-timeout-secs", "1"]).await;
    let started = std::time::Instant::now();
    let (status, out) = server
        .admin(
            Method::POST,
            "/api/v1/query",
            Some(json!({"sql": "SELECT count(*) FROM range(100000000000) WHERE value % 7 = 3"})),
        )
        .await;
    assert_eq!(status, 503, "{out}");
    assert!(out["error"].as_str().unwrap().contains("timeout"), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the timeout did not stop the query");
    // The server is still answering.
    assert_eq!(server.query("SELECT 1").await, vec![vec![json!(1)]]);
}
