//! The attack regressions of issue 16: one tenant (acme) against another (globex) on a shared
//! server, through every door. Each test replays an attack that once worked: SQL errors as an
//! oracle on another tenant's rows, MQTT session takeover by client id, forged alarm events,
//! filling the CoAP block-wise table, and an oversized MQTT 5 PUBLISH; the last test walks every
//! door with every role of the other tenant. MQTT scenarios are paho-mqtt
//! (clients/mqtt_attacks.py); CoAP is hand-made datagrams.

mod coap;
mod doors;
mod mqtt;
mod sql;

use corral_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const ATTACKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mqtt_attacks.py");
const PATIENCE: Duration = Duration::from_secs(10);

/// (id, tenant, site, profile). globex uses acme's site and profile names too, so a leak through
/// a join or a filter on them would show.
const FLEET: [(&str, &str, &str, &str); 5] = [
    ("acme-d1", "acme", "north", "reefer"),
    ("acme-d2", "acme", "south", "reefer"),
    ("acme-d3", "acme", "north", "probe"),
    ("globex-d1", "globex", "north", "reefer"),
    ("globex-d2", "globex", "east", "probe"),
];
const READINGS_PER_DEVICE: usize = 5;
const ACME_ROWS: usize = 15;
const ALL_ROWS: usize = 25;

/// The readings of `FLEET[k]`, at fixed times so two servers hold identical rows. Multiples of
/// 0.5, so sums are exact in any order; globex-d1's newest is 77.0, what the oracle guesses at.
/// globex's devices also report a field of their own, `pin_code`, whose very name is theirs.
fn readings(k: usize) -> Value {
    let rows = (0..READINGS_PER_DEVICE).map(|i| {
        let temperature = if FLEET[k].0 == "globex-d1" && i == 4 { 77.0 } else { ((k * 7 + i * 11) % 60) as f64 * 0.5 - 3.0 };
        let mut row = json!({"ts": 1_795_255_200_000i64 + i as i64 * 60_000 + k as i64, "temperature": temperature});
        if FLEET[k].1 == "globex" {
            row["pin_code"] = json!(4711);
        }
        row
    });
    Value::Array(rows.collect())
}

async fn create_tenants(server: &TestServer, tenants: &[&str]) {
    for tenant in tenants {
        let (status, out) = server.admin(Method::POST, "/api/v1/tenants", Some(json!({"id": tenant}))).await;
        assert_eq!(status, 201, "tenant {tenant}: {out}");
    }
}

/// Creates `tenants` and registers their devices of the fleet, with their readings.
async fn populate(server: &TestServer, tenants: &[&str]) {
    create_tenants(server, tenants).await;
    for (k, (id, tenant, site, profile)) in FLEET.iter().enumerate().filter(|(_, d)| tenants.contains(&d.1)) {
        let token = server.register_device(id, json!({"tenant": tenant, "site": site, "profile": profile})).await;
        let (status, out) = server.ingest(&token, "telemetry", &readings(k).to_string()).await;
        assert_eq!(status, 200, "{id}: {out}");
        if *tenant == "globex" {
            // A table only globex writes: for acme it does not exist.
            let (status, out) = server.ingest(&token, "vault", r#"{"door": "open"}"#).await;
            assert_eq!(status, 200, "{id}: {out}");
        }
    }
}

/// SQL as `token`: (status, the rows when 200, else the error body).
async fn sql(server: &TestServer, token: &str, sql: &str) -> (u16, Value) {
    let (status, out) = server.call(Method::POST, "/api/v1/query", token, Some(json!({"sql": sql}))).await;
    (status, if status == 200 { out["rows"].clone() } else { out })
}
