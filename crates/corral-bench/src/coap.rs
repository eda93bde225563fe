//! The CoAP benchmark (issue 5): many sensors, each on its own UDP socket, sending one JSON
//! reading per message as fast as their answers come back (one request in flight per sensor,
//! RFC 7252's NSTART = 1), Confirmable and Non-confirmable.
//!
//! Corral answers 2.04 only once the reading is durable (WAL fsync), and the rows are counted
//! by SQL afterwards. The peer is libcoap's own `coap-server` (Debian libcoap3-bin) answering
//! the same datagrams as `PUT /example_data`, which it keeps in memory: the cost of the CoAP
//! exchange alone, so the ratio shows what decoding, authentication and durability cost on top.

use crate::mqtt::stats::median;
use crate::server::{ADMIN_TOKEN, free_port, terminate};
use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

#[derive(Debug, Clone, Args)]
pub struct CoapArgs {
    #[arg(long, default_value = "target/release/corral")]
    pub corral: PathBuf,
    /// libcoap's server, the peer.
    #[arg(long, default_value = "coap-server-notls")]
    pub libcoap: String,
    /// Sensors sending at once, each its own socket and device.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Runs of each case (interleaved); the report gives medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Confirmable,
    NonConfirmable,
}

/// What one load run saw: answers with a 2.xx code, requests never answered, elapsed seconds.
struct Load {
    answered: u64,
    lost: u64,
    seconds: f64,
}

pub async fn run(args: CoapArgs) -> anyhow::Result<()> {
    let mut results: Vec<(&str, Mode, Vec<f64>, u64, u64)> = Vec::new();
    for server in ["corral", "libcoap"] {
        for mode in [Mode::Confirmable, Mode::NonConfirmable] {
            results.push((server, mode, Vec::new(), 0, 0));
        }
    }
    for run in 0..args.runs {
        for (server, mode, rates, answered, stored) in results.iter_mut() {
            let (load, rows) = match *server {
                "corral" => corral(&args, *mode).await?,
                _ => (libcoap(&args, *mode).await?, None),
            };
            let rate = load.answered as f64 / load.seconds;
            eprintln!(
                "run {}/{}: {server:7} {:16} {rate:>9.0} msg/s answered, {} lost{}",
                run + 1,
                args.runs,
                format!("{mode:?}"),
                load.lost,
                rows.map(|r| format!(", {r} rows stored of {} acknowledged", load.answered)).unwrap_or_default()
            );
            if let Some(rows) = rows {
                anyhow::ensure!(rows >= load.answered, "Corral acknowledged {} readings but stored {rows}", load.answered);
            }
            rates.push(rate);
            *answered += load.answered;
            *stored += rows.unwrap_or(0);
        }
    }
    report(&args, &results);
    Ok(())
}

fn report(args: &CoapArgs, results: &[(&str, Mode, Vec<f64>, u64, u64)]) {
    let medians: Vec<f64> = results.iter().map(|r| median(r.2.clone()).unwrap_or(0.0)).collect();
    if args.json {
        let cases: Vec<Value> = results
            .iter()
            .zip(&medians)
            .map(|(r, m)| json!({"server": r.0, "mode": format!("{:?}", r.1), "median_msgs_per_s": m, "runs": r.2, "answered": r.3, "stored": r.4}))
            .collect();
        println!("{}", json!({"clients": args.clients, "seconds": args.seconds, "cases": cases}));
        return;
    }
    println!(
        "\nCoAP ingest, {} sensors, one reading per message, medians of {} runs of {} s:",
        args.clients, args.runs, args.seconds
    );
    println!("| mode | Corral (durable) msg/s | libcoap coap-server (memory) msg/s | Corral / libcoap |");
    println!("|---|---|---|---|");
    for (i, mode) in ["Confirmable", "Non-confirmable"].iter().enumerate() {
        let (c, l) = (medians[i], medians[2 + i]);
        println!("| {mode} | {c:.0} | {l:.0} | {:.2} |", if l > 0.0 { c / l } else { 0.0 });
    }
    println!("Corral rows stored = readings acknowledged in every run (counted by SQL).");
}

/// One run against a fresh Corral: the load and the rows counted afterwards.
async fn corral(args: &CoapArgs, mode: Mode) -> anyhow::Result<(Load, Option<u64>)> {
    let dir = tempfile::Builder::new().prefix("corral-bench-").tempdir_in(crate::server::bench_tmp())?;
    let listening = crate::server::start(&args.corral, dir.path(), &[])?;
    let mut child = listening.child;
    let coap = listening.coap.context("corral reported no CoAP listener")?;
    let http = reqwest::Client::new();
    let mut paths = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let r: Value = http
            .post(format!("{}/api/v1/devices", listening.http))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"id": format!("sensor-{i:05}"), "profile": "sensor"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        paths.push(Target { device: format!("sensor-{i:05}"), token: r["token"].as_str().unwrap_or_default().to_string() });
    }
    let load = drive(coap, paths, mode, args.seconds, true).await?;
    let rows = crate::ingest::count(&http, &listening.http).await?;
    terminate(&mut child)?;
    Ok((load, Some(rows)))
}

async fn libcoap(args: &CoapArgs, mode: Mode) -> anyhow::Result<Load> {
    let port = free_port()?;
    let mut child = Command::new(&args.libcoap)
        .args(["-A", "127.0.0.1", "-p", &port.to_string(), "-v", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} (apt install libcoap3-bin)", args.libcoap))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let targets = (0..args.clients).map(|_| Target { device: String::new(), token: String::new() }).collect();
    let load = drive(SocketAddr::from(([127, 0, 0, 1], port)), targets, mode, args.seconds, false).await;
    let _ = child.kill();
    let _ = child.wait();
    load
}

/// Who a sensor is: its device id and token (empty for the peer).
struct Target {
    device: String,
    token: String,
}

async fn drive(server: SocketAddr, targets: Vec<Target>, mode: Mode, seconds: u64, corral: bool) -> anyhow::Result<Load> {
    let answered = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut sensors = Vec::new();
    for (i, target) in targets.into_iter().enumerate() {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(server).await?;
        let path: Vec<String> =
            if corral { vec!["devices".into(), target.device, "telemetry".into()] } else { vec!["example_data".into()] };
        let query = (!target.token.is_empty()).then(|| format!("t={}", target.token));
        let (answered, lost) = (answered.clone(), lost.clone());
        sensors.push(tokio::spawn(async move {
            let mut message_id = (i as u16).wrapping_mul(7919);
            let mut buf = [0u8; 1500];
            let mut reading = 0u64;
            while Instant::now() < deadline {
                message_id = message_id.wrapping_add(1);
                reading += 1;
                let token = (reading as u32).to_be_bytes();
                let payload = format!(
                    r#"{{"temperature":{:.1},"humidity":{:.1},"battery":3.7}}"#,
                    20.0 + (reading % 50) as f64 / 10.0,
                    40.0 + (reading % 30) as f64
                );
                let code = if corral { 2 } else { 3 }; // POST telemetry; PUT example_data
                let datagram = request(mode, code, message_id, &token, &path, query.as_deref(), payload.as_bytes());
                // A Confirmable request is retransmitted after 2, 4, 8 s (RFC 7252); a
                // Non-confirmable one is given up after 2 s.
                let attempts = if mode == Mode::Confirmable { 4 } else { 1 };
                let mut ok = false;
                'attempts: for attempt in 0..attempts {
                    if socket.send(&datagram).await.is_err() {
                        break;
                    }
                    let wait = Duration::from_secs(2 << attempt);
                    let until = Instant::now() + wait;
                    while let Ok(Ok(n)) = tokio::time::timeout_at(until.into(), socket.recv(&mut buf)).await {
                        let answer = &buf[..n];
                        if n < 4 {
                            continue;
                        }
                        if answer[1] == 0 && answer[2..4] == message_id.to_be_bytes() {
                            continue; // an empty ACK: the answer follows as a separate response
                        }
                        // Ours: the answer carrying our token (piggybacked, separate or NON).
                        if n >= 8 && answer[0] & 0x0f == 4 && answer[4..8] == token {
                            if answer[0] >> 4 & 3 == 0 {
                                let _ = socket.send(&[0x60, 0, answer[2], answer[3]]).await; // ACK a separate response
                            }
                            ok = answer[1] >> 5 == 2;
                            break 'attempts;
                        }
                    }
                }
                if ok {
                    answered.fetch_add(1, Relaxed);
                } else {
                    lost.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    for sensor in sensors {
        sensor.await?;
    }
    Ok(Load { answered: answered.load(Relaxed), lost: lost.load(Relaxed), seconds: started.elapsed().as_secs_f64() })
}

/// A request datagram (Corral's own CoAP codec): Uri-Path segments, an optional Uri-Query,
/// Content-Format JSON.
pub(crate) fn request(
    mode: Mode,
    code: u8,
    message_id: u16,
    token: &[u8],
    path: &[String],
    query: Option<&str>,
    payload: &[u8],
) -> Vec<u8> {
    use corral_coap::message::option;
    let kind = if mode == Mode::Confirmable { corral_coap::Kind::Confirmable } else { corral_coap::Kind::NonConfirmable };
    let mut message = corral_coap::Message::new(kind, corral_coap::Code(code), message_id, token.to_vec());
    for segment in path {
        message.add_option(option::URI_PATH, segment.as_bytes().to_vec());
    }
    message.add_uint(option::CONTENT_FORMAT, 50);
    if let Some(q) = query {
        message.add_option(option::URI_QUERY, q.as_bytes().to_vec());
    }
    message.payload = payload.to_vec();
    message.encode()
}
