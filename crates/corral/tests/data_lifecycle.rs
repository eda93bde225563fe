//! Retention, rollups and deleting a device's data on a running server, as an operator drives
//! them: `corral data ...` and the REST routes, roles and tenant scopes, the audit log, and a
//! `kill -9` after the deletions that must bring nothing back.

use corral_testkit::{ADMIN_TOKEN, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const DAY_MS: i64 = 86_400_000;

fn corral(server: &TestServer, args: &[&str]) -> String {
    let (ok, stdout, stderr) = server.cli(args);
    assert!(ok, "corral {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// truck-1 (tenant acme) and meter-1 (tenant metro), three readings each, 40 days, 20 days and
/// one hour old, and a truck's reading now and then in a table of its own.
async fn fleet(extra_args: &[&str]) -> TestServer {
    let server = TestServer::start_with(BIN, extra_args).await;
    let now = now_ms();
    for (device, tenant) in [("truck-1", "acme"), ("meter-1", "metro")] {
        server.admin(Method::POST, "/api/v1/tenants", Some(json!({"id": tenant}))).await;
        let token = server.register_device(device, json!({"tenant": tenant})).await;
        let body = json!([
            {"ts": now - 40 * DAY_MS, "temperature": 1.0},
            {"ts": now - 20 * DAY_MS, "temperature": 2.0},
            {"ts": now - 3_600_000, "temperature": 3.0},
        ]);
        let (status, out) = server.ingest(&token, "readings", &body.to_string()).await;
        assert_eq!(status, 200, "{out}");
        let (status, out) = server.ingest(&token, "doors", &json!({"ts": now - 40 * DAY_MS, "open": 1.0}).to_string()).await;
        assert_eq!(status, 200, "{out}");
    }
    server
}

async fn rows_of(server: &TestServer, device: &str) -> Vec<Vec<Value>> {
    server.query(&format!("SELECT temperature FROM readings WHERE device = '{device}' ORDER BY time")).await
}

#[tokio::test]
async fn retention_and_a_device_deletion_from_the_cli_hold_after_a_kill_9() {
    let mut server = fleet(&[]).await;
    corral(&server, &["data", "retention", "set", "readings", "30d"]);
    corral(&server, &["data", "retention", "set", "readings", "10d", "--tenant", "metro"]);
    let enforced = corral(&server, &["data", "retention", "enforce"]);
    assert!(enforced.contains("readings") && enforced.contains("retention"), "{enforced}");

    assert_eq!(rows_of(&server, "truck-1").await, vec![vec![json!(2.0)], vec![json!(3.0)]], "acme keeps the table's 30 days");
    assert_eq!(rows_of(&server, "meter-1").await, vec![vec![json!(3.0)]], "metro keeps 10 days");
    assert_eq!(server.count("doors").await, 2, "a table without a policy keeps everything");

    let deleted = corral(&server, &["data", "delete-device", "truck-1"]);
    assert!(deleted.contains("deleted 3 rows of truck-1"), "{deleted}");
    assert!(rows_of(&server, "truck-1").await.is_empty());
    let latest = server.query("SELECT device FROM latest.readings ORDER BY device").await;
    assert_eq!(latest, vec![vec![json!("meter-1")]]);

    let (status, audit) = server.admin(Method::GET, "/api/v1/audit?limit=50", None).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["retention.set", "retention.enforce", "data.delete", "device.delete_data"] {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }

    server.kill9();
    server.restart();
    assert!(rows_of(&server, "truck-1").await.is_empty(), "no deleted row comes back after kill -9");
    assert_eq!(rows_of(&server, "meter-1").await, vec![vec![json!(3.0)]]);
    let policies: Value = serde_json::from_str(&corral(&server, &["data", "retention", "list", "--json"])).unwrap();
    assert_eq!(policies["policies"].as_array().unwrap().len(), 2, "{policies}");
}

#[tokio::test]
async fn who_may_change_how_long_data_is_kept() {
    let server = fleet(&[]).await;
    let operator = server.api_token("ops", "operator", None).await;
    let acme_admin = server.api_token("acme-admin", "admin", Some("acme")).await;
    let acme_viewer = server.api_token("acme-viewer", "viewer", Some("acme")).await;
    let put = |token: String, body: Value| {
        let server = &server;
        async move { server.call(Method::PUT, "/api/v1/retention/readings", &token, Some(body)).await }
    };
    assert_eq!(put(operator.clone(), json!({"keep": "30d"})).await.0, 403);
    assert_eq!(put(acme_admin.clone(), json!({"keep": "30d", "tenant": "metro"})).await.0, 403, "not another tenant's");
    let (status, out) = put(acme_admin.clone(), json!({"keep": "5d"})).await;
    assert_eq!((status, &out["policy"]["tenant"]), (200, &json!("acme")), "a scoped admin sets its own tenant's: {out}");
    let (status, out) = put(ADMIN_TOKEN.to_string(), json!({"keep": "soon"})).await;
    assert_eq!(status, 400, "{out}");
    assert!(out["error"].as_str().unwrap().contains("not a duration"), "{out}");

    assert_eq!(server.call(Method::POST, "/api/v1/retention/enforce", &acme_admin, None).await.0, 403);
    assert_eq!(server.call(Method::DELETE, "/api/v1/devices/meter-1/data", &acme_admin, None).await.0, 404);
    assert_eq!(server.call(Method::DELETE, "/api/v1/devices/truck-1/data", &operator, None).await.0, 403);
    let rollup = json!({"name": "readings_1h", "source": "readings", "every": "1h"});
    assert_eq!(server.call(Method::POST, "/api/v1/rollups", &acme_admin, Some(rollup)).await.0, 403);

    // A viewer reads the policies its scope covers: the acme one, not another tenant's.
    server.admin(Method::PUT, "/api/v1/retention/readings", Some(json!({"keep": "9d", "tenant": "metro"}))).await;
    let (status, out) = server.call(Method::GET, "/api/v1/retention", &acme_viewer, None).await;
    assert_eq!(status, 200);
    let tenants: Vec<&Value> = out["policies"].as_array().unwrap().iter().map(|p| &p["tenant"]).collect();
    assert_eq!(tenants, vec![&json!("acme")], "{out}");
    assert_eq!(server.call(Method::DELETE, "/api/v1/retention/readings?tenant=acme", &acme_admin, None).await.0, 204);
    assert_eq!(server.call(Method::DELETE, "/api/v1/retention/readings?tenant=acme", &acme_admin, None).await.0, 404);
}

/// Polls `sql` until it answers `expected` (the rollup refreshes every second here).
async fn eventually(server: &TestServer, sql: &str, expected: &[Vec<Value>]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Until the first refresh the rollup's table does not exist: the query is refused.
        let (status, out) = server.admin(Method::POST, "/api/v1/query", Some(json!({ "sql": sql }))).await;
        let got = out["rows"].clone();
        if status == 200 && got == json!(expected) {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}\n got {got:?}\nwant {expected:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_rollup_matches_the_raw_aggregate_and_follows_late_data() {
    let server = fleet(&["--set", "storage.rollup_refresh_secs=1"]).await;
    let rollup = json!({"name": "readings_1h", "source": "readings", "every": "1h"});
    let (status, out) = server.admin(Method::POST, "/api/v1/rollups", Some(rollup.clone())).await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(server.admin(Method::POST, "/api/v1/rollups", Some(rollup)).await.0, 409);

    let raw = "SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMP '1970-01-01T00:00:00') AS bucket, device, \
               avg(temperature), min(temperature), max(temperature), count(temperature) \
               FROM readings GROUP BY 1, 2 ORDER BY 2, 1";
    let summary = "SELECT time, device, temperature_avg, temperature_min, temperature_max, temperature_count \
                   FROM readings_1h ORDER BY 2, 1";
    let expected = server.query(raw).await;
    assert_eq!(expected.len(), 6);
    eventually(&server, summary, &expected).await;

    // A late reading for meter-1's 20-day-old hour corrects that bucket.
    let (status, out) = server.admin(Method::POST, "/api/v1/devices/meter-1/token", None).await;
    assert_eq!(status, 200, "{out}");
    let meter = out["token"].as_str().unwrap().to_string();
    let old = server
        .query("SELECT CAST(to_unixtime(time) AS BIGINT) * 1000 FROM readings WHERE device = 'meter-1' AND temperature = 2.0")
        .await;
    let late_ms = old[0][0].as_i64().unwrap() + 1;
    let (status, out) = server.ingest(&meter, "readings", &json!({"ts": late_ms, "temperature": 12.0}).to_string()).await;
    assert_eq!(status, 200, "{out}");
    let expected = server.query(raw).await;
    assert_eq!(expected.len(), 6, "the same buckets, one of them with two readings");
    eventually(&server, summary, &expected).await;

    let (status, out) = server.admin(Method::GET, "/api/v1/rollups", None).await;
    assert_eq!((status, out["rollups"][0]["name"].as_str()), (200, Some("readings_1h")), "{out}");
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let written = metrics.lines().find_map(|l| l.strip_prefix("corral_rollup_rows_written_total ")).expect(&metrics);
    assert!(written.parse::<u64>().unwrap() >= 7, "{written}");
}
