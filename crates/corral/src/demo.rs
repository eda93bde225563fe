//! `corral demo`: the platform plus a simulated fleet that sends through the real HTTP ingest path,
//! so a newcomer sees live data, a misbehaving device or two, and an unknown one knocking.
//!
//! Fleet: tenant `acme-cold-chain` runs refrigerated containers (`reefer`) and delivery trucks
//! (`truck`) at three logistics sites; tenant `metro-facilities` runs `hvac` units in two office
//! buildings. Misbehaviour: `reefer-07` is warming up, `truck-13` overheats now and then,
//! `hvac-05` goes silent after a minute, `hvac-11` sometimes sends `mode` as a number (rejected,
//! 400), and an unregistered `reefer-99` keeps trying with a made-up token (401). Four rules
//! raise alarms for the misbehaving ones (see `add_rules`).

use crate::config::Config;
use crate::serve;
use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::time::Duration;

struct Kind {
    profile: &'static str,
    tenant: &'static str,
    sites: &'static [&'static str],
    count: usize,
}

const FLEET: &[Kind] = &[
    Kind { profile: "reefer", tenant: "acme-cold-chain", sites: &["rotterdam-port", "hamburg-depot", "lyon-dc"], count: 24 },
    Kind { profile: "truck", tenant: "acme-cold-chain", sites: &["hamburg-depot", "lyon-dc", "rotterdam-port"], count: 20 },
    Kind { profile: "hvac", tenant: "metro-facilities", sites: &["paris-hq", "berlin-office"], count: 16 },
];

fn profiles() -> Vec<Value> {
    vec![
        json!({"name": "reefer", "description": "Refrigerated shipping container",
            "attributes": [{"name": "cargo", "type": "string"}, {"name": "setpoint_c", "type": "number"}],
            "telemetry": [{"name": "temperature", "type": "number", "unit": "Cel"}, {"name": "door_open", "type": "boolean"},
                          {"name": "shock_g", "type": "number", "unit": "g"}, {"name": "gps.lat", "type": "number"}, {"name": "gps.lon", "type": "number"}]}),
        json!({"name": "truck", "description": "Delivery truck",
            "attributes": [{"name": "model", "type": "string"}, {"name": "capacity_kg", "type": "number"}],
            "telemetry": [{"name": "speed_kmh", "type": "number"}, {"name": "fuel_pct", "type": "number"},
                          {"name": "engine_temp", "type": "number", "unit": "Cel"}, {"name": "gps.lat", "type": "number"}, {"name": "gps.lon", "type": "number"}]}),
        json!({"name": "hvac", "description": "Building HVAC unit",
            "attributes": [{"name": "capacity_kw", "type": "number"}, {"name": "floor", "type": "string"}],
            "telemetry": [{"name": "supply_temp", "type": "number"}, {"name": "return_temp", "type": "number"},
                          {"name": "power_kw", "type": "number"}, {"name": "mode", "type": "string"}]}),
    ]
}

pub async fn run(mut config: Config, interval: Duration) -> anyhow::Result<()> {
    // A machine that already runs a broker (a mosquitto service, say) holds 1883; the demo then
    // takes any free port and prints it, rather than failing to start.
    if let Ok(Some(addr)) = config.mqtt_addr()
        && std::net::TcpListener::bind(addr).is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    {
        tracing::warn!(%addr, "MQTT port in use; the demo listens on a free port instead");
        config.mqtt.listen = std::net::SocketAddr::new(addr.ip(), 0).to_string();
    }
    if let Ok(Some(addr)) = config.coap_addr()
        && std::net::UdpSocket::bind(addr).is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    {
        tracing::warn!(%addr, "CoAP port in use; the demo listens on a free port instead");
        config.coap.listen = std::net::SocketAddr::new(addr.ip(), 0).to_string();
    }
    if let Ok(Some(addr)) = config.coaps_addr()
        && std::net::UdpSocket::bind(addr).is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    {
        tracing::warn!(%addr, "CoAP over DTLS port in use; the demo listens on a free port instead");
        config.coap.dtls_listen = std::net::SocketAddr::new(addr.ip(), 0).to_string();
    }
    if let Ok(Some(addr)) = config.pg_addr()
        && std::net::TcpListener::bind(addr).is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    {
        tracing::warn!(%addr, "PostgreSQL port in use; the demo listens on a free port instead");
        config.pg.listen = std::net::SocketAddr::new(addr.ip(), 0).to_string();
    }
    let running = serve::start(config).await?;
    let Some(admin) = running.admin_token.clone() else {
        bail!("the demo needs the admin token: set CORRAL_ADMIN_TOKEN, or use a fresh --data-dir");
    };
    let base = format!("http://{}", loopback(running.http_addr));
    let http = reqwest::Client::new();
    let devices = provision(&http, &base, &admin).await.context("registering the simulated fleet")?;
    add_rules(&http, &base, &admin).await.context("adding the demo's rules")?;
    println!("\nCorral demo is running: {} simulated devices at 5 sites in 2 tenants.", devices.len());
    println!("  console:  {base}/");
    println!("  login:    user admin, password {admin} (also the API token)");
    println!("  try:      curl -s -H 'Authorization: Bearer {admin}' {base}/api/v1/query \\");
    println!(
        "              -d '{{\"sql\": \"SELECT d.site, avg(t.temperature) FROM telemetry t JOIN devices d USING (device) GROUP BY d.site\"}}'"
    );
    if let Some(pg) = running.pg_addr {
        let pg = loopback(pg);
        println!(
            "  psql:     psql 'postgresql://token:{admin}@{}:{}/corral'   (BI tools: user token, password = an API token)",
            pg.ip(),
            pg.port()
        );
    }
    if let Some(mqtt) = running.mqtt_addr {
        let mqtt = loopback(mqtt);
        println!("  mqtt:     {mqtt} (a device: client id = user name = device id, password = its token)");
    }
    if let Some(coap) = running.coap_addr {
        println!("  coap:     coap://{}/devices/<id>/telemetry?t=<device token>", loopback(coap));
    }
    if let Some(coaps) = running.coaps_addr {
        println!(
            "  coaps:    coaps://{}/devices/<id>/telemetry (PSK identity = device id; key: corral device psk <id>)",
            loopback(coaps)
        );
    }
    println!("  alarms:   corral alarm list --open --server {base} --token {admin}   (rules: corral rule list)");
    println!("Stop with Ctrl-C.\n");
    let mut tasks = Vec::new();
    for (i, (id, profile, token)) in devices.into_iter().enumerate() {
        tasks.push(tokio::spawn(simulate(http.clone(), base.clone(), id, profile, token, interval, i as u64)));
    }
    tasks.push(tokio::spawn(unknown_device(http.clone(), base.clone(), interval)));
    serve::wait_for_signal().await;
    tasks.iter().for_each(|t| t.abort());
    let _ = running.stop.send(true);
    running.done.await?
}

fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() { std::net::SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr }
}

/// Registers tenants, profiles and devices through the REST API. On a second run the devices
/// exist already; their tokens are rotated (tokens are only ever shown once).
async fn provision(http: &reqwest::Client, base: &str, admin: &str) -> anyhow::Result<Vec<(String, &'static str, String)>> {
    for tenant in ["acme-cold-chain", "metro-facilities"] {
        let r = http.post(format!("{base}/api/v1/tenants")).bearer_auth(admin).json(&json!({"id": tenant})).send().await?;
        ensure_ok_or_conflict(r).await?;
    }
    for profile in profiles() {
        let name = profile["name"].as_str().unwrap_or_default().to_string();
        let r = http.put(format!("{base}/api/v1/profiles/{name}")).bearer_auth(admin).json(&profile).send().await?;
        ensure_ok_or_conflict(r).await?;
    }
    let mut out = Vec::new();
    let mut rng = StdRng::seed_from_u64(7);
    for kind in FLEET {
        for n in 1..=kind.count {
            let id = format!("{}-{n:02}", kind.profile);
            let site = kind.sites[n % kind.sites.len()];
            let attributes = match kind.profile {
                "reefer" => {
                    let (cargo, setpoint) = [("vaccines", 4.0), ("bananas", 13.0), ("seafood", -18.0)][n % 3];
                    json!({"cargo": cargo, "setpoint_c": setpoint})
                }
                "truck" => {
                    let (model, capacity) = [("eActros", 12000), ("FH16", 18000), ("TGX", 24000)][n % 3];
                    json!({"model": model, "capacity_kg": capacity})
                }
                _ => json!({"capacity_kw": rng.random_range(20..120), "floor": format!("{}", n % 6)}),
            };
            let body = json!({"id": id, "profile": kind.profile, "tenant": kind.tenant, "site": site,
                              "attributes": attributes, "tags": [kind.profile, site]});
            let r = http.post(format!("{base}/api/v1/devices")).bearer_auth(admin).json(&body).send().await?;
            let token = if r.status() == reqwest::StatusCode::CONFLICT {
                let r = http.post(format!("{base}/api/v1/devices/{id}/token")).bearer_auth(admin).send().await?;
                ensure_ok_or_conflict(r).await?["token"].as_str().unwrap_or_default().to_string()
            } else {
                ensure_ok_or_conflict(r).await?["token"].as_str().unwrap_or_default().to_string()
            };
            out.push((id, kind.profile, token));
        }
    }
    Ok(out)
}

async fn ensure_ok_or_conflict(r: reqwest::Response) -> anyhow::Result<Value> {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status.is_success() || status == reqwest::StatusCode::CONFLICT { Ok(body) } else { bail!("{status}: {body}") }
}

/// Rules that catch the fleet's misbehaviour: `reefer-07` warming, `truck-13` overheating,
/// `hvac-05` going silent. Skipped when a rule of that name exists (a second run).
async fn add_rules(http: &reqwest::Client, base: &str, admin: &str) -> anyhow::Result<()> {
    let existing = http.get(format!("{base}/api/v1/rules")).bearer_auth(admin).send().await?.json::<Value>().await?;
    let names: Vec<&str> = existing["rules"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
    let rules = [
        json!({"name": "Reefer warming", "tenant": "acme-cold-chain", "scope": {"profile": "reefer"},
               "condition": "temperature > 8", "clear": "temperature < 7", "severity": "major",
               "message": "{device} is above 8 °C"}),
        json!({"name": "Vaccines at risk", "tenant": "acme-cold-chain", "scope": {"profile": "reefer"},
               "condition": "avg(temperature) over 1m > 8 AND attributes.cargo = 'vaccines'", "severity": "critical"}),
        json!({"name": "Engine overheating", "tenant": "acme-cold-chain", "scope": {"profile": "truck"},
               "condition": "engine_temp > 110", "for": "5s", "severity": "major"}),
        json!({"name": "HVAC silent", "tenant": "metro-facilities", "scope": {"profile": "hvac"},
               "absence": "20s", "severity": "warning"}),
    ];
    for rule in rules.into_iter().filter(|r| !names.contains(&r["name"].as_str().unwrap_or_default())) {
        ensure_ok_or_conflict(http.post(format!("{base}/api/v1/rules")).bearer_auth(admin).json(&rule).send().await?).await?;
    }
    Ok(())
}

/// One device's life: a random walk around its kind's normal values, one message per interval.
async fn simulate(
    http: reqwest::Client,
    base: String,
    id: String,
    profile: &'static str,
    token: String,
    interval: Duration,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let started = tokio::time::Instant::now();
    tokio::time::sleep(interval.mul_f64(rng.random_range(0.0..1.0))).await;
    let (mut lat, mut lon) = (rng.random_range(45.0..53.5), rng.random_range(2.0..10.0));
    let mut level: f64 = rng.random_range(0.0..1.0);
    let mut ticks = 0u64;
    loop {
        ticks += 1;
        lat += rng.random_range(-0.01..0.01);
        lon += rng.random_range(-0.01..0.01);
        level = (level + rng.random_range(-0.05..0.05)).clamp(0.0, 1.0);
        let body = match profile {
            "reefer" => {
                let drift = if id == "reefer-07" { ticks as f64 * 0.15 } else { 0.0 };
                json!({"temperature": 4.0 + level * 2.0 - 1.0 + drift, "door_open": rng.random_bool(0.03),
                       "shock_g": rng.random_range(0.0..0.4), "gps": {"lat": lat, "lon": lon}})
            }
            "truck" => {
                let hot = id == "truck-13" && ticks % 12 > 8;
                json!({"speed_kmh": (level * 90.0).round(), "fuel_pct": 100.0 - (ticks % 400) as f64 * 0.2,
                       "engine_temp": if hot { 118.0 } else { 85.0 + level * 10.0 }, "gps": {"lat": lat, "lon": lon}})
            }
            _ => {
                if id == "hvac-05" && started.elapsed() > Duration::from_secs(60) {
                    tokio::time::sleep(interval).await;
                    continue; // silent: its last_seen goes stale
                }
                let mode: Value = if id == "hvac-11" && ticks.is_multiple_of(7) {
                    json!(2)
                } else {
                    json!(["eco", "comfort"][ticks as usize % 2])
                };
                json!({"supply_temp": 16.0 + level * 3.0, "return_temp": 22.0 + level * 2.0,
                       "power_kw": 5.0 + level * 30.0, "mode": mode})
            }
        };
        match http.post(format!("{base}/api/v1/ingest")).bearer_auth(&token).json(&body).send().await {
            Ok(r) if !r.status().is_success() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::info!(device = %id, %status, response = %text, "simulated device was refused");
            }
            Err(e) => tracing::warn!(device = %id, error = %e, "simulated device could not send"),
            Ok(_) => {}
        }
        tokio::time::sleep(interval).await;
    }
}

/// A device nobody registered, trying anyway.
async fn unknown_device(http: reqwest::Client, base: String, interval: Duration) {
    loop {
        tokio::time::sleep(interval * 3).await;
        let _ = http
            .post(format!("{base}/api/v1/ingest"))
            .bearer_auth("cdt_not-a-real-token-reefer-99")
            .json(&json!({"temperature": 9.9}))
            .send()
            .await;
    }
}
