//! `GET /api/v1/export`: a query's result as CSV or Parquet, streamed, read back with pyarrow and
//! DuckDB and compared with the same query's JSON answer.

use corral_testkit::{ADMIN_TOKEN, TestServer};
use serde_json::{Value, json};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/export_check.py");

/// truck-1 (tenant acme) and meter-1 (tenant metro), `rows` readings each, one second apart.
async fn fleet(rows: usize) -> TestServer {
    let server = TestServer::start(BIN).await;
    for (device, tenant, base) in [("truck-1", "acme", 0.0), ("meter-1", "metro", 1000.0)] {
        server.admin(reqwest::Method::POST, "/api/v1/tenants", Some(json!({"id": tenant}))).await;
        let token = server.register_device(device, json!({"tenant": tenant})).await;
        let body: Vec<Value> = (0..rows)
            .map(|k| {
                let ts = format!("2026-01-01T{:02}:{:02}:{:02}Z", k / 3600, (k / 60) % 60, k % 60);
                json!({"ts": ts, "temperature": base + k as f64})
            })
            .collect();
        let (status, out) = server.ingest(&token, "readings", &json!(body).to_string()).await;
        assert_eq!(status, 200, "{out}");
    }
    server
}

async fn export(server: &TestServer, token: &str, sql: &str, format: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let url = reqwest::Url::parse_with_params(&server.url("/api/v1/export"), [("sql", sql), ("format", format)]).unwrap();
    let response = server.http.get(url).bearer_auth(token).send().await.expect("export");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.bytes().await.expect("the whole body").to_vec())
}

#[tokio::test]
async fn a_parquet_export_reads_back_in_pyarrow_and_duckdb_as_the_query_answers() {
    // More rows than one batch, so the file is written in several pieces.
    let server = fleet(20_000).await;
    let sql = "SELECT time, device, temperature FROM readings ORDER BY device, time";
    let (status, headers, body) = export(&server, ADMIN_TOKEN, sql, "parquet").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/vnd.apache.parquet");
    assert!(headers["content-disposition"].to_str().unwrap().contains("export.parquet"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.parquet");
    std::fs::write(&file, &body).unwrap();
    let out = Command::new("python3").arg(CHECK).arg(&file).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["columns"], json!(["time", "device", "temperature"]));
    let answer = server.query("SELECT device, temperature FROM readings ORDER BY device, time").await;
    let rows: Vec<Vec<Value>> = serde_json::from_value(read["rows"].clone()).unwrap();
    assert_eq!(rows.len(), 40_000);
    assert_eq!(rows, answer, "pyarrow reads the rows the query answers, in its order");
    let sum: f64 = answer.iter().map(|r| r[1].as_f64().unwrap()).sum();
    assert_eq!(read["duckdb"]["count"], 40_000);
    assert!((read["duckdb"]["sum"].as_f64().unwrap() - sum).abs() < 1e-6, "{read}");
    assert_eq!(read["duckdb"]["min_device"], "meter-1");
}

#[tokio::test]
async fn a_csv_export_has_a_header_even_without_rows_and_keeps_the_tenant_scope() {
    let server = fleet(3).await;
    let viewer = server.api_token("acme-viewer", "viewer", Some("acme")).await;
    let (status, headers, body) = export(&server, &viewer, "SELECT device, temperature FROM readings ORDER BY time", "csv").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(String::from_utf8(body).unwrap(), "device,temperature\ntruck-1,0.0\ntruck-1,1.0\ntruck-1,2.0\n");
    let (_, _, body) = export(&server, ADMIN_TOKEN, "SELECT device FROM readings WHERE false", "csv").await;
    assert_eq!(String::from_utf8(body).unwrap(), "device\n");
}

#[tokio::test]
async fn an_export_that_cannot_be_planned_or_would_write_is_refused_before_any_byte() {
    let server = fleet(1).await;
    for (sql, format) in [("SELECT nope FROM readings", "csv"), ("DROP TABLE readings", "parquet"), ("SELECT 1", "xlsx")] {
        let (status, _, body) = export(&server, ADMIN_TOKEN, sql, format).await;
        assert_eq!(status, 400, "{sql} as {format}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _, _) = export(&server, "not-a-token", "SELECT 1", "csv").await;
    assert_eq!(status, 401);
}
