//! The PostgreSQL wire door, driven by real PostgreSQL clients: psql, psycopg 3, SQLAlchemy with
//! pandas, node-postgres, and the recorded catalog queries of Grafana, Metabase, pgjdbc, DBeaver
//! and SQLAlchemy (`tests/clients/pg_tool_queries.py`).

use corral_testkit::{ADMIN_TOKEN, TestServer};
use serde_json::json;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/pg_clients.py");
const NODE_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/node/pg_node.js");

/// A server holding truck-1 and truck-2 (tenant acme, sites north and south) and meter-1 (tenant
/// metro, site east), each with three readings one second apart from 2026-01-01T00:00:00Z.
struct Fleet {
    server: TestServer,
    /// Device tokens by device id.
    tokens: Vec<(String, String)>,
}

impl Fleet {
    async fn start(extra: &[&str]) -> Fleet {
        let server = TestServer::start_with(BIN, extra).await;
        let mut tokens = Vec::new();
        for (device, tenant, site, first) in
            [("truck-1", "acme", "north", 4.5), ("truck-2", "acme", "south", 6.5), ("meter-1", "metro", "east", 20.5)]
        {
            server.admin(reqwest::Method::POST, "/api/v1/tenants", Some(json!({"id": tenant}))).await;
            let token = server.register_device(device, json!({"tenant": tenant, "site": site})).await;
            let rows: Vec<_> = (0..3)
                .map(|k| {
                    json!({"ts": format!("2026-01-01T00:00:0{k}Z"), "temperature": first + k as f64,
                           "door_open": k == 1, "note": if k == 0 { "ok" } else { "later" }})
                })
                .collect();
            let (status, out) = server.ingest(&token, "readings", &json!(rows).to_string()).await;
            assert_eq!(status, 200, "{out}");
            tokens.push((device.to_string(), token));
        }
        Fleet { server, tokens }
    }

    fn token(&self, device: &str) -> &str {
        &self.tokens.iter().find(|(d, _)| d == device).expect("a device of the fleet").1
    }

    fn host_port(&self) -> (&str, &str) {
        self.server.pg.rsplit_once(':').expect("host:port")
    }

    /// Runs a scenario of `pg_clients.py`; panics with its reason when it fails.
    fn client(&self, scenario: &str, args: &[&str]) -> String {
        let (host, port) = self.host_port();
        let out = Command::new("python3").arg(CLIENTS).args([scenario, host, port]).args(args).output().expect("python3");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{scenario}: {stdout}{stderr}\nserver log:\n{}", self.server.log_text());
        stdout.into_owned()
    }

    /// `psql -c` for each command, as one session; what it printed.
    fn psql(&self, commands: &[&str]) -> String {
        let (host, port) = self.host_port();
        let url = format!("postgresql://token:{ADMIN_TOKEN}@{host}:{port}/corral?sslmode=disable");
        let mut psql = Command::new("psql");
        psql.args([url.as_str(), "-X", "-v", "ON_ERROR_STOP=1"]);
        for command in commands {
            psql.args(["-c", command]);
        }
        let out = psql.output().expect("psql is installed");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "psql {commands:?}: {stdout}{stderr}");
        stdout.into_owned()
    }
}

#[tokio::test]
async fn psql_lists_and_describes_tables_and_joins_telemetry_to_the_inventory() {
    let fleet = Fleet::start(&[]).await;
    let out = fleet.psql(&[r"\dt"]);
    for table in ["devices", "readings", "alarms", "commands"] {
        assert!(out.lines().any(|l| l.contains(&format!(" {table} ")) && l.contains("| table")), "\\dt lacks {table}:\n{out}");
    }
    let out = fleet.psql(&[r"\d public.readings"]);
    assert!(out.contains(r#"Table "public.readings""#), "{out}");
    assert!(out.lines().any(|l| l.contains("temperature") && l.contains("double precision")), "{out}");
    assert!(out.lines().any(|l| l.contains("time") && l.contains("timestamp with time zone")), "{out}");
    // A bare name finds the table on the search path, as in PostgreSQL; `latest` is named.
    let out = fleet.psql(&[r"\d readings"]);
    assert!(out.contains(r#"Table "public.readings""#) && !out.contains("latest.readings"), "{out}");
    let out = fleet.psql(&[r"\d latest.readings"]);
    assert!(out.contains(r#"Table "latest.readings""#), "{out}");
    let out = fleet.psql(&[
        "SELECT d.site, count(*) AS readings, max(r.temperature) AS warmest FROM readings r JOIN devices d USING (device) GROUP BY d.site ORDER BY d.site",
    ]);
    let rows: Vec<Vec<&str>> =
        out.lines().filter(|l| l.contains('|') && !l.contains("site")).map(|l| l.split('|').map(str::trim).collect()).collect();
    assert_eq!(rows, [["east", "3", "22.5"], ["north", "3", "6.5"], ["south", "3", "8.5"]], "{out}");
    let out =
        fleet.psql(&["SELECT version()", "SHOW server_version", "SET application_name = 'psql test'", "SHOW application_name"]);
    assert!(out.contains("PostgreSQL 16.6 (Corral"), "{out}");
    assert!(out.contains("psql test"), "SET is remembered for SHOW: {out}");
}

#[tokio::test]
async fn psycopg_reads_every_common_type_in_text_and_binary_with_server_side_parameters() {
    let fleet = Fleet::start(&[]).await;
    fleet.client("values", &[ADMIN_TOKEN]);
}

#[tokio::test]
async fn a_prepared_statement_reads_the_data_that_landed_after_it_was_prepared() {
    let fleet = Fleet::start(&[]).await;
    fleet.client("prepared", &[ADMIN_TOKEN, fleet.token("meter-1"), &fleet.server.base]);
}

#[tokio::test]
async fn writes_wrong_passwords_device_tokens_and_wrong_user_names_are_refused() {
    let fleet = Fleet::start(&[]).await;
    fleet.client("refusals", &[ADMIN_TOKEN, fleet.token("truck-1")]);
    // The server kept serving: a fresh client still reads.
    fleet.client("values", &[ADMIN_TOKEN]);
}

#[tokio::test]
async fn a_tenant_scoped_token_sees_only_its_tenants_devices_and_rows() {
    let fleet = Fleet::start(&[]).await;
    let viewer = fleet.server.api_token("acme-viewer", "viewer", Some("acme")).await;
    fleet.client("tenant", &[&viewer, "acme"]);
}

#[tokio::test]
async fn statements_end_at_the_timeout_a_cancel_request_or_the_row_limit() {
    // The door streams up to ten times the JSON answer's limit: 100 rows here.
    let fleet = Fleet::start(&["--max-query-rows", "10"]).await;
    fleet.client("limits", &[ADMIN_TOKEN]);
}

#[tokio::test]
async fn pandas_reads_through_sqlalchemy_and_psycopg() {
    let fleet = Fleet::start(&[]).await;
    fleet.client("pandas", &[ADMIN_TOKEN]);
}

#[tokio::test]
async fn bi_tools_catalog_and_start_up_queries_answer_verbatim() {
    let fleet = Fleet::start(&[]).await;
    let out = fleet.client("tools", &[ADMIN_TOKEN]);
    assert!(out.contains("tool queries answered"), "{out}");
}

#[tokio::test]
async fn node_postgres_binds_parameters_and_reads_rows() {
    let fleet = Fleet::start(&[]).await;
    let (host, port) = fleet.host_port();
    let out = Command::new("node").arg(NODE_CLIENT).args([host, port, ADMIN_TOKEN]).output().expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON rows");
    assert_eq!(rows, json!([{"device": "truck-2", "temperature": 7.5, "door_open": true}]));
}

#[tokio::test]
async fn with_tls_configured_tokens_travel_only_inside_it() {
    let certs = tempfile::tempdir().unwrap();
    corral_testkit::make_certificates(certs.path());
    let (cert, key) = (certs.path().join("server.pem"), certs.path().join("server.key"));
    let fleet = Fleet::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--https",
        "off",
        "--mqtts",
        "off",
        "--set",
        "pg.cleartext=\"never\"",
    ])
    .await;
    fleet.client("no_tls", &[ADMIN_TOKEN]);
    fleet.client("tls", &[ADMIN_TOKEN, certs.path().join("ca.pem").to_str().unwrap()]);
    assert!(fleet.server.log_text().contains("login refused: no TLS"), "the refusal is logged");
}
