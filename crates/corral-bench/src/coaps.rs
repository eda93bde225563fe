//! The CoAP over DTLS benchmark: sensors with pre-shared keys (PSK identity = device id), against
//! Corral's `--coaps` listener and libcoap's own `coap-server-openssl` (Debian libcoap3-bin).
//!
//! Two figures, as for MQTTS: **session set-up** (each sensor, over and over: a fresh socket, a
//! full DTLS handshake, one Confirmable reading, close_notify) and **readings over established
//! sessions** (each sensor keeps its session and sends Confirmable readings, one in flight). Both
//! sides negotiate RFC 7252's mandatory suite, `TLS_PSK_WITH_AES_128_CCM_8`, so the handshake work
//! is the same. Corral answers 2.04 only after the WAL fsync, and its rows are counted afterwards;
//! libcoap keeps `PUT /example_data` in memory. Each sensor runs on its own thread with blocking
//! OpenSSL, the client DTLS stack most devices' gateways share.

use crate::coap::{Mode, request};
use crate::mqtt::stats::median;
use crate::server::{ADMIN_TOKEN, free_port, terminate};
use anyhow::Context;
use clap::Args;
use openssl::ssl::{HandshakeError, Ssl, SslContext, SslMethod, SslStream, SslVerifyMode};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct CoapsArgs {
    #[arg(long, default_value = "target/release/corral")]
    pub corral: PathBuf,
    /// libcoap's server with OpenSSL, the peer.
    #[arg(long, default_value = "coap-server-openssl")]
    pub libcoap: String,
    /// Sensors at once, each its own thread, socket and device.
    #[arg(long, default_value_t = 32)]
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
enum Case {
    /// Handshake + one Confirmable reading + close_notify, repeated.
    SetUp,
    /// Confirmable readings over one session per sensor.
    Readings,
}

/// What a sensor needs to talk: the server, its PSK identity and key, the request path.
#[derive(Clone)]
struct Sensor {
    server: SocketAddr,
    identity: String,
    key: Vec<u8>,
    path: Vec<String>,
    /// POST telemetry (Corral) or PUT example_data (libcoap).
    code: u8,
}

/// What one load run saw.
struct Load {
    done: u64,
    failed: u64,
    seconds: f64,
}

pub async fn run(args: CoapsArgs) -> anyhow::Result<()> {
    let mut results: Vec<(&str, Case, Vec<f64>, u64)> = Vec::new();
    for server in ["corral", "libcoap"] {
        for case in [Case::SetUp, Case::Readings] {
            results.push((server, case, Vec::new(), 0));
        }
    }
    for run in 0..args.runs {
        for (server, case, rates, failed) in results.iter_mut() {
            let (load, rows) = match *server {
                "corral" => corral(&args, *case).await?,
                _ => (libcoap(&args, *case).await?, None),
            };
            let rate = load.done as f64 / load.seconds;
            eprintln!(
                "run {}/{}: {server:7} {:9} {rate:>8.0}/s, {} failed{}",
                run + 1,
                args.runs,
                format!("{case:?}"),
                load.failed,
                rows.map(|r| format!(", {r} rows stored of {} acknowledged", load.done)).unwrap_or_default()
            );
            if let Some(rows) = rows {
                anyhow::ensure!(rows >= load.done, "Corral acknowledged {} readings but stored {rows}", load.done);
            }
            rates.push(rate);
            *failed += load.failed;
        }
    }
    let medians: Vec<f64> = results.iter().map(|r| median(r.2.clone()).unwrap_or(0.0)).collect();
    if args.json {
        let cases: Vec<Value> = results
            .iter()
            .zip(&medians)
            .map(|(r, m)| json!({"server": r.0, "case": format!("{:?}", r.1), "median_per_s": m, "runs": r.2, "failed": r.3}))
            .collect();
        println!("{}", json!({"clients": args.clients, "seconds": args.seconds, "cases": cases}));
        return Ok(());
    }
    println!(
        "\nCoAP over DTLS 1.2 (PSK, TLS_PSK_WITH_AES_128_CCM_8), {} sensors, medians of {} runs of {} s:",
        args.clients, args.runs, args.seconds
    );
    println!("| case | Corral (durable) /s | libcoap coap-server-openssl (memory) /s | Corral / libcoap |");
    println!("|---|---|---|---|");
    for (i, case) in ["sessions set up (handshake + 1 CON reading)", "CON readings over open sessions"].iter().enumerate() {
        let (c, l) = (medians[i], medians[2 + i]);
        println!("| {case} | {c:.0} | {l:.0} | {:.2} |", if l > 0.0 { c / l } else { 0.0 });
    }
    println!("Corral rows stored >= readings acknowledged in every run (counted by SQL).");
    Ok(())
}

/// One run against a fresh Corral whose sensors each have a PSK; the rows counted afterwards.
async fn corral(args: &CoapsArgs, case: Case) -> anyhow::Result<(Load, Option<u64>)> {
    let dir = tempfile::Builder::new().prefix("corral-bench-").tempdir_in(crate::server::bench_tmp())?;
    let listening = crate::server::start(&args.corral, dir.path(), &[])?;
    let mut child = listening.child;
    let server = listening.coaps.context("corral reported no CoAP over DTLS listener")?;
    let http = reqwest::Client::new();
    let mut sensors = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let id = format!("sensor-{i:05}");
        let key = format!("bench-psk-for-sensor-{i:05}");
        http.post(format!("{}/api/v1/devices", listening.http))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"id": id, "profile": "sensor"}))
            .send()
            .await?
            .error_for_status()?;
        http.put(format!("{}/api/v1/devices/{id}/psk", listening.http))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"key": key}))
            .send()
            .await?
            .error_for_status()?;
        let path = vec!["devices".to_string(), id.clone(), "telemetry".to_string()];
        sensors.push(Sensor { server, identity: id, key: key.into_bytes(), path, code: 2 });
    }
    let load = drive(sensors, case, args.seconds).await?;
    let rows = crate::ingest::count(&http, &listening.http).await?;
    terminate(&mut child)?;
    Ok((load, Some(rows)))
}

async fn libcoap(args: &CoapsArgs, case: Case) -> anyhow::Result<Load> {
    // coap-server listens for DTLS on the port after `-p`; every identity shares the `-k` key.
    let port = free_port()?;
    let key = "bench-psk-for-all-sensors";
    let mut child = Command::new(&args.libcoap)
        .args(["-A", "127.0.0.1", "-p", &port.to_string(), "-k", key, "-v", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} (apt install libcoap3-bin)", args.libcoap))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = SocketAddr::from(([127, 0, 0, 1], port + 1));
    let sensors = (0..args.clients)
        .map(|i| Sensor {
            server,
            identity: format!("sensor-{i:05}"),
            key: key.as_bytes().to_vec(),
            path: vec!["example_data".into()],
            code: 3,
        })
        .collect();
    let load = drive(sensors, case, args.seconds).await;
    let _ = child.kill();
    let _ = child.wait();
    load
}

async fn drive(sensors: Vec<Sensor>, case: Case, seconds: u64) -> anyhow::Result<Load> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let threads: Vec<_> = sensors
        .into_iter()
        .enumerate()
        .map(|(i, sensor)| {
            let (done, failed) = (done.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut message_id = (i as u16).wrapping_mul(7919);
                let mut session = None;
                while Instant::now() < deadline {
                    let ok = (|| -> anyhow::Result<()> {
                        let stream = match session.take() {
                            Some(stream) => stream,
                            None => handshake(&sensor)?,
                        };
                        let mut stream = stream;
                        message_id = message_id.wrapping_add(1);
                        reading(&mut stream, &sensor, message_id)?;
                        match case {
                            Case::SetUp => {
                                let _ = stream.shutdown(); // close_notify: the server forgets the session
                            }
                            Case::Readings => session = Some(stream),
                        }
                        Ok(())
                    })();
                    match ok {
                        Ok(()) => done.fetch_add(1, Relaxed),
                        Err(_) => failed.fetch_add(1, Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await?;
    Ok(Load { done: done.load(Relaxed), failed: failed.load(Relaxed), seconds: started.elapsed().as_secs_f64() })
}

/// A connected UDP socket as the byte stream OpenSSL's DTLS reads and writes datagrams through.
#[derive(Debug)]
struct Datagrams(UdpSocket);

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.send(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A full DTLS 1.2 handshake with the sensor's PSK, from a fresh socket.
fn handshake(sensor: &Sensor) -> anyhow::Result<SslStream<Datagrams>> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(sensor.server)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut context = SslContext::builder(SslMethod::dtls())?;
    context.set_cipher_list("PSK-AES128-CCM8")?;
    context.set_verify(SslVerifyMode::NONE);
    let (identity, key) = (sensor.identity.clone(), sensor.key.clone());
    context.set_psk_client_callback(move |_ssl, _hint, identity_out, key_out| {
        // The identity is a C string: its bytes, then NUL.
        identity_out[..identity.len()].copy_from_slice(identity.as_bytes());
        identity_out[identity.len()] = 0;
        key_out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    let mut ssl = Ssl::new(&context.build())?;
    ssl.set_mtu(1400)?;
    match ssl.connect(Datagrams(socket)) {
        Ok(stream) => Ok(stream),
        // A read timed out: one flight was lost (the stream has no DTLS retransmission timer).
        Err(HandshakeError::WouldBlock(_)) => anyhow::bail!("handshake timed out"),
        Err(e) => anyhow::bail!("handshake: {e}"),
    }
}

/// One Confirmable reading and its 2.xx answer.
fn reading(stream: &mut SslStream<Datagrams>, sensor: &Sensor, message_id: u16) -> anyhow::Result<()> {
    let token = message_id.to_be_bytes();
    let payload = format!(r#"{{"temperature":{:.1},"battery":3.7}}"#, 20.0 + (message_id % 50) as f64 / 10.0);
    let datagram = request(Mode::Confirmable, sensor.code, message_id, &token, &sensor.path, None, payload.as_bytes());
    stream.ssl_write(&datagram)?;
    let mut buf = [0u8; 1500];
    loop {
        let n = stream.ssl_read(&mut buf)?;
        let answer = &buf[..n];
        if n >= 4 && answer[1] == 0 && answer[2..4] == message_id.to_be_bytes() {
            continue; // an empty ACK: a separate response follows
        }
        if n >= 6 && answer[0] & 0x0f == 2 && answer[4..6] == token {
            if answer[0] >> 4 & 3 == 0 {
                stream.ssl_write(&[0x60, 0, answer[2], answer[3]])?; // ACK a separate response
            }
            anyhow::ensure!(answer[1] >> 5 == 2, "answered {}.{:02}", answer[1] >> 5, answer[1] & 0x1f);
            return Ok(());
        }
    }
}
