//! Scheduled exports on a running server: into an S3 bucket served by moto (a local S3 server
//! from PyPI) and into a local folder, read back with pyarrow, the csv module and DuckDB and
//! compared with the source; a missing bucket that fails runs until the alarm is raised, and the
//! success that clears it.

use corral_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const READ_BACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/exported_files.py");
const DAY_MS: i64 = 86_400_000;

/// moto's S3 server on a free port, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (pip install 'moto[server]')");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_back(args: &[&str]) -> Value {
    let out = Command::new("python3").arg(READ_BACK).args(args).output().expect("python3");
    assert!(out.status.success(), "exported_files.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Ingests readings into `readings` as a new device of `tenant`.
async fn readings(server: &TestServer, device: &str, tenant: &str, rows: &[(i64, f64)]) {
    server.admin(Method::POST, "/api/v1/tenants", Some(json!({"id": tenant}))).await;
    let token = server.register_device(device, json!({"tenant": tenant})).await;
    let body: Vec<Value> = rows.iter().map(|(ts, t)| json!({"ts": ts, "temperature": t})).collect();
    let (status, out) = server.ingest(&token, "readings", &json!(body).to_string()).await;
    assert_eq!(status, 200, "{out}");
}

async fn export_status(server: &TestServer, name: &str) -> Value {
    let (status, out) = server.admin(Method::GET, &format!("/api/v1/exports/{name}"), None).await;
    assert_eq!(status, 200, "{out}");
    out["export"].clone()
}

async fn open_alarm_devices(server: &TestServer) -> Vec<String> {
    let (_, out) = server.admin(Method::GET, "/api/v1/alarms?open=true", None).await;
    out["alarms"].as_array().unwrap().iter().map(|a| a["device"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn an_export_to_a_bucket_fails_until_the_bucket_exists_then_exports_every_row_once() {
    let moto = Moto::start();
    let endpoint = format!("exports.s3_endpoint={}", moto.endpoint);
    let server = TestServer::start_with_env(
        BIN,
        &["--set", &endpoint, "--set", "exports.alarm_after_failures=2", "--set", "exports.retry_secs=3600"],
        &[("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_EC2_METADATA_DISABLED", "true")],
    )
    .await;
    let now = now_ms();
    readings(&server, "truck-1", "acme", &[(now - 2 * DAY_MS, 1.0), (now - DAY_MS, 2.0), (now - 600_000, 3.0)]).await;

    let (ok, _, stderr) = server.cli(&[
        "export",
        "add",
        "lake",
        "--table",
        "readings",
        "--to",
        "s3://lake/corral",
        "--every",
        "1h",
        "--delay",
        "1s",
    ]);
    assert!(ok, "{stderr}");

    // No bucket yet: runs fail, and the second failure in a row raises the alarm.
    let (status, out) = server.admin(Method::POST, "/api/v1/exports/lake/run", None).await;
    assert_eq!(status, 502, "{out}");
    assert!(out["error"].as_str().unwrap().contains("lake"), "{out}");
    server.admin(Method::POST, "/api/v1/exports/lake/run", None).await;
    assert!(export_status(&server, "lake").await["failures_in_a_row"].as_u64().unwrap() >= 2);
    assert!(open_alarm_devices(&server).await.contains(&"export:lake".to_string()));

    read_back(&["mkbucket", &moto.endpoint, "lake"]);
    let (status, out) = server.admin(Method::POST, "/api/v1/exports/lake/run", None).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["run"]["rows"], 3, "{out}");
    assert!(!open_alarm_devices(&server).await.contains(&"export:lake".to_string()), "a success clears the alarm");

    let exported = read_back(&["s3", &moto.endpoint, "lake", "corral/lake"]);
    assert_eq!(exported["files"].as_array().unwrap().len(), 3, "one file per UTC day: {exported}");
    assert_eq!(exported["duckdb"], json!({"count": 3, "sum": 6.0}));
    let source = server.query("SELECT temperature FROM readings ORDER BY time").await;
    let temperatures: Vec<Value> = exported["rows"].as_array().unwrap().iter().map(|r| r[2].clone()).collect();
    assert_eq!(temperatures, source.iter().map(|r| r[0].clone()).collect::<Vec<_>>());

    // What lands next is exported by the next run once it is older than the delay (1 s), and
    // nothing twice.
    readings(&server, "truck-2", "acme", &[(now_ms(), 4.0)]).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, out) = server.admin(Method::POST, "/api/v1/exports/lake/run", None).await;
    assert_eq!((status, &out["run"]["rows"]), (200, &json!(1)), "{out}");
    let exported = read_back(&["s3", &moto.endpoint, "lake", "corral/lake"]);
    assert_eq!(exported["duckdb"], json!({"count": 4, "sum": 10.0}), "{exported}");
}

#[tokio::test]
async fn a_tenants_export_to_a_folder_holds_only_its_rows_and_only_it_sees_it() {
    let server = TestServer::start(BIN).await;
    let now = now_ms();
    readings(&server, "truck-1", "acme", &[(now - DAY_MS, 1.5), (now - 60_000, 2.5)]).await;
    readings(&server, "meter-1", "metro", &[(now - DAY_MS, 100.0)]).await;
    let acme = server.api_token("acme-admin", "admin", Some("acme")).await;
    let metro = server.api_token("metro-admin", "admin", Some("metro")).await;
    let spec = json!({"name": "acme-csv", "sql": "SELECT time, device, temperature FROM readings",
                      "format": "csv", "destination": "acme/readings", "every": "1d", "delay": "1s"});
    let (status, out) = server.call(Method::POST, "/api/v1/exports", &acme, Some(spec)).await;
    assert_eq!(status, 201, "{out}");
    let (status, out) = server.call(Method::POST, "/api/v1/exports/acme-csv/run", &acme, None).await;
    assert_eq!(status, 200, "{out}");

    let folder = server.data_dir().join("exports/acme/readings/acme-csv");
    let exported = read_back(&["dir", folder.to_str().unwrap()]);
    assert_eq!(exported["duckdb"], json!({"count": 2, "sum": 4.0}), "only acme's rows: {exported}");
    let devices: Vec<&Value> = exported["rows"].as_array().unwrap().iter().map(|r| &r[1]).collect();
    assert_eq!(devices, vec![&json!("truck-1"), &json!("truck-1")]);

    assert_eq!(server.call(Method::GET, "/api/v1/exports/acme-csv", &metro, None).await.0, 404);
    let (_, listed) = server.call(Method::GET, "/api/v1/exports", &metro, None).await;
    assert_eq!(listed["exports"], json!([]));
    let viewer = server.api_token("acme-viewer", "viewer", Some("acme")).await;
    assert_eq!(server.call(Method::POST, "/api/v1/exports/acme-csv/run", &viewer, None).await.0, 403);
    let bad = json!({"name": "x", "table": "readings", "destination": "/etc", "every": "1h"});
    assert_eq!(server.call(Method::POST, "/api/v1/exports", &acme, Some(bad)).await.0, 400);
}
