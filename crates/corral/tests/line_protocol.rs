//! InfluxDB line protocol at /write and /api/v2/write, through curl as Influx clients send it:
//! tokens in every place they put them, gzip, precision, atomic rejection, and who may write.

use corral_testkit::{ADMIN_TOKEN, TestServer};
use reqwest::Method;
use serde_json::json;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// POSTs `body` with curl and extra args; returns (status, body).
fn curl_post(url: &str, body: &[u8], extra: &[&str]) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\\n%{http_code}", "-X", "POST", url, "--data-binary"])
        .arg(format!("@{}", file.display()))
        .args(extra)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[tokio::test]
async fn a_device_writes_v2_with_precision_and_gzip() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("truck-1", json!({"site": "depot"})).await;
    let body = b"# fleet data\nreadings,fleet=north,driver=Ann\\ Lee velocity=61.5,fuel=42i,moving=true,note=\"a \\\"quoted\\\" word\" 1795255200\n\nreadings,fleet=north velocity=0 1795255210\r\n";
    let url = server.url("/api/v2/write?org=acme&bucket=fleet&precision=s");
    let auth = format!("Authorization: Token {token}");
    let (status, out) = curl_post(&url, &gzip(body), &["-H", &auth, "-H", "Content-Encoding: gzip"]);
    assert_eq!(status, 204, "{out}");
    let rows = server.query("SELECT time, device, fleet, driver, velocity, fuel, moving, note FROM readings ORDER BY time").await;
    assert_eq!(
        rows,
        vec![
            vec![
                json!("2026-11-21T10:00:00Z"),
                json!("truck-1"),
                json!("north"),
                json!("Ann Lee"),
                json!(61.5),
                json!(42),
                json!(true),
                json!("a \"quoted\" word")
            ],
            vec![
                json!("2026-11-21T10:00:10Z"),
                json!("truck-1"),
                json!("north"),
                json!(null),
                json!(0.0),
                json!(null),
                json!(null),
                json!(null)
            ],
        ]
    );
    // Joins to the registry like any telemetry.
    let rows = server.query("SELECT d.site, count(*) FROM readings r JOIN devices d USING (device) GROUP BY d.site").await;
    assert_eq!(rows, vec![vec![json!("depot"), json!(2)]]);
}

#[tokio::test]
async fn an_application_writes_v1_for_several_devices() {
    let server = TestServer::start(BIN).await;
    let body = b"cpu,host=web-1,region=eu usage=12.5 1795255200000\ncpu,host=web-2,region=eu usage=80 1795255200000\n";
    let url = server.url(&format!("/write?db=metrics&u=telegraf&p={ADMIN_TOKEN}&precision=ms&device_tag=host"));
    let (status, out) = curl_post(&url, body, &[]);
    assert_eq!(status, 204, "{out}");
    let rows = server.query("SELECT device, region, usage FROM cpu ORDER BY device").await;
    assert_eq!(rows, vec![vec![json!("web-1"), json!("eu"), json!(12.5)], vec![json!("web-2"), json!("eu"), json!(80.0)]]);
    // Basic auth, as the v1 client libraries send it.
    let url = server.url("/write?db=metrics&device_tag=host");
    let (status, out) = curl_post(&url, b"cpu,host=web-3 usage=1\n", &["-u", &format!("telegraf:{ADMIN_TOKEN}")]);
    assert_eq!(status, 204, "{out}");
    assert_eq!(server.count("cpu").await, 3);
}

#[tokio::test]
async fn a_bad_line_or_a_type_conflict_stores_nothing_and_names_the_line() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("s1", json!({})).await;
    let auth = format!("Authorization: Token {token}");
    let url = server.url("/api/v2/write?bucket=b&org=o");
    assert_eq!(curl_post(&url, b"env temp=20.5\n", &["-H", &auth]).0, 204);
    let (status, out) = curl_post(&url, b"env temp=21\nenv temp=abc\n", &["-H", &auth]);
    assert_eq!(status, 400, "{out}");
    assert!(out.contains("line 2"), "{out}");
    let (status, out) = curl_post(&url, b"env temp=22\nenv temp=\"warm\"\n", &["-H", &auth]);
    assert_eq!(status, 400, "{out}");
    assert!(out.contains("temp"), "{out}");
    let (status, out) = curl_post(&server.url("/api/v2/write?precision=fortnights"), b"env temp=1\n", &["-H", &auth]);
    assert_eq!(status, 400, "{out}");
    assert_eq!(server.count("env").await, 1);
}

#[tokio::test]
async fn only_the_right_tokens_may_write_for_a_device() {
    let server = TestServer::start(BIN).await;
    let own = server.register_device("a-1", json!({"tenant": "alpha"})).await;
    server.register_device("b-1", json!({"tenant": "beta"})).await;
    let url = server.url("/api/v2/write");
    // A device writes only its own data.
    let (status, out) = curl_post(&url, b"m,device=b-1 v=1\n", &["-H", &format!("Authorization: Token {own}")]);
    assert_eq!(status, 403, "{out}");
    // No token, a wrong token, a viewer: refused.
    assert_eq!(curl_post(&url, b"m,device=a-1 v=1\n", &[]).0, 401);
    assert_eq!(curl_post(&url, b"m,device=a-1 v=1\n", &["-H", "Authorization: Token nope"]).0, 401);
    let viewer = mint(&server, "v", "viewer", None).await;
    assert_eq!(curl_post(&url, b"m,device=a-1 v=1\n", &["-H", &format!("Authorization: Token {viewer}")]).0, 403);
    // A tenant-scoped operator writes for its tenant's registered devices only.
    let alpha = mint(&server, "alpha", "operator", Some("alpha")).await;
    let alpha_auth = format!("Authorization: Token {alpha}");
    assert_eq!(curl_post(&url, b"m,device=b-1 v=1\n", &["-H", &alpha_auth]).0, 403);
    assert_eq!(curl_post(&url, b"m,device=ghost v=1\n", &["-H", &alpha_auth]).0, 403);
    let (status, out) = curl_post(&url, b"m,device=a-1 v=1\n", &["-H", &alpha_auth]);
    assert_eq!(status, 204, "{out}");
    // A line without the device tag, from an application, is an error naming the tag.
    let (status, out) = curl_post(&url, b"m v=1\n", &["-H", &format!("Authorization: Token {ADMIN_TOKEN}")]);
    assert_eq!(status, 400, "{out}");
    assert!(out.contains("device"), "{out}");
    assert_eq!(server.count("m").await, 1);
}

async fn mint(server: &TestServer, name: &str, role: &str, tenant: Option<&str>) -> String {
    let body = json!({"name": name, "role": role, "tenant": tenant});
    let (status, out) = server.admin(Method::POST, "/api/v1/tokens", Some(body)).await;
    assert_eq!(status, 201, "{out}");
    out["token"].as_str().unwrap().to_string()
}

/// The official InfluxDB Python clients (v2 `influxdb-client`, v1 `influxdb`) write unchanged;
/// a retried write stores nothing twice and a later write of one field overwrites only it.
#[tokio::test]
async fn official_influx_python_clients_write_unchanged() {
    let server = TestServer::start(BIN).await;
    let device = server.register_device("truck-9", json!({})).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/influx_clients.py");
    let base = server.base.clone();
    let out = tokio::task::spawn_blocking(move || Command::new("python3").args([script, &base, &device, ADMIN_TOKEN]).output())
        .await
        .unwrap()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Influx clients failed (pip install influxdb-client influxdb):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = server.query("SELECT time, device, model, rpm, gear, running, note FROM engine ORDER BY time").await;
    assert_eq!(
        rows,
        vec![
            vec![
                json!("2026-11-21T10:00:00Z"),
                json!("truck-9"),
                json!("FH16"),
                json!(1450.5),
                json!(6),
                json!(true),
                json!("say \"hi\", ok")
            ],
            vec![
                json!("2026-11-21T10:01:00Z"),
                json!("truck-9"),
                json!("FH16"),
                json!(1500.25),
                json!(8),
                json!(null),
                json!(null)
            ],
        ]
    );
    // `cabin air` is stored in the table `cabin_air` (docs/data-model.md).
    assert_eq!(server.query("SELECT device, co2_ppm FROM cabin_air").await, vec![vec![json!("truck-9"), json!(612.0)]]);
    let rows = server.query("SELECT device, usage FROM cpu ORDER BY device").await;
    assert_eq!(rows, vec![vec![json!("web-1"), json!(12.5)], vec![json!("web-2"), json!(80.0)]]);
}
