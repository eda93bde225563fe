//! The MQTTS connection set-up benchmark (issue 5): many clients connecting over and over, each
//! time a full TLS handshake (no session resumption), MQTT CONNECT/CONNACK and DISCONNECT.
//!
//! Cases: Corral with a device token as the password, Corral with a client certificate from a
//! Corral CA (mTLS, no password), and Mosquitto 2.0 with TLS and anonymous clients as the peer.
//! Certificates are made with the openssl CLI (server) and Corral's REST API (devices).

use crate::mqtt::stats::median;
use crate::mqtt::wire;
use crate::server::{ADMIN_TOKEN, free_port, terminate};
use anyhow::{Context, bail};
use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Args)]
pub struct MqttsArgs {
    #[arg(long, default_value = "target/release/corral")]
    pub corral: PathBuf,
    /// Clients connecting at once.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long)]
    pub json: bool,
}

/// How a client proves who it is.
#[derive(Clone)]
enum Login {
    Anonymous,
    Token(Vec<(String, String)>),
    Certificate(Vec<(String, Arc<rustls::ClientConfig>)>),
}

pub async fn run(args: MqttsArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("mqtts-bench-").tempdir_in(crate::server::bench_tmp())?;
    server_certificates(dir.path())?;
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(dir.path().join("server-ca.pem"))? {
            roots.add(cert?)?;
        }
        Arc::new(roots)
    };
    let cases = ["corral token", "corral mTLS", "mosquitto"];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for run in 0..args.runs {
        for (i, case) in cases.iter().enumerate() {
            let (rate, failed) = match i {
                2 => mosquitto(&args, dir.path(), &roots).await?,
                _ => corral(&args, dir.path(), &roots, i == 1).await?,
            };
            eprintln!("run {}/{}: {case:13} {rate:>8.0} handshakes/s, {failed} failed", run + 1, args.runs);
            rates[i].push(rate);
        }
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r.clone()).unwrap_or(0.0)).collect();
    if args.json {
        println!(
            "{}",
            json!({"clients": args.clients, "seconds": args.seconds, "cases": cases, "median_per_s": medians, "runs": rates})
        );
        return Ok(());
    }
    println!(
        "\nMQTTS connection set-up (full TLS handshake + CONNECT/CONNACK + DISCONNECT), {} clients, medians of {} runs of {} s:",
        args.clients, args.runs, args.seconds
    );
    println!("| case | handshakes/s | vs Mosquitto |");
    println!("|---|---|---|");
    for (case, m) in cases.iter().zip(&medians) {
        println!("| {case} | {m:.0} | {:.2} |", if medians[2] > 0.0 { m / medians[2] } else { 0.0 });
    }
    Ok(())
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().context("running openssl")?;
    anyhow::ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A server CA and a P-256 server certificate for 127.0.0.1.
fn server_certificates(dir: &Path) -> anyhow::Result<()> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let ca = ["-days", "2", "-subj", "/CN=Bench CA", "-keyout", "server-ca.key", "-out", "server-ca.pem"];
    openssl(dir, &[&["req", "-x509"][..], &ec[..], &ca[..]].concat())?;
    let server = ["-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"];
    openssl(dir, &[&["req"][..], &ec[..], &server[..]].concat())?;
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n")?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "server-ca.pem",
            "-CAkey",
            "server-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    )
}

fn client_config(
    roots: &Arc<rustls::RootCertStore>,
    identity: Option<(String, String)>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots.clone());
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?
        }
        None => builder.with_no_client_auth(),
    };
    // Every connection pays the full handshake, as a fleet reconnecting after an outage does.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

async fn corral(args: &MqttsArgs, certs: &Path, roots: &Arc<rustls::RootCertStore>, mtls: bool) -> anyhow::Result<(f64, u64)> {
    let data = tempfile::Builder::new().prefix("corral-bench-").tempdir_in(crate::server::bench_tmp())?;
    let extra: Vec<String> =
        ["--mqtts", "127.0.0.1:0", "--https", "127.0.0.1:0", "--tls-cert", "server.pem", "--tls-key", "server.key"]
            .iter()
            .map(|a| if a.starts_with("server") { certs.join(a).display().to_string() } else { a.to_string() })
            .collect();
    let listening = crate::server::start(&args.corral, data.path(), &extra)?;
    let mut child = listening.child;
    let addr = listening.mqtts.context("corral reported no MQTTS listener")?;
    let http = reqwest::Client::new();
    let base = listening.http;
    if mtls {
        http.post(format!("{base}/api/v1/cas"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "bench"}))
            .send()
            .await?
            .error_for_status()?;
    }
    let mut tokens = Vec::new();
    let mut identities = Vec::new();
    for i in 0..args.clients {
        let id = format!("bench-{i:04}");
        let r: Value = http
            .post(format!("{base}/api/v1/devices"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"id": id}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        tokens.push((id.clone(), r["token"].as_str().unwrap_or_default().to_string()));
        if mtls {
            let issued: Value = http
                .post(format!("{base}/api/v1/devices/{id}/certificate"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let pair = (
                issued["certificate"].as_str().unwrap_or_default().to_string(),
                issued["private_key"].as_str().unwrap_or_default().to_string(),
            );
            identities.push((id, client_config(roots, Some(pair))?));
        }
    }
    let login = if mtls { Login::Certificate(identities) } else { Login::Token(tokens) };
    let result = drive(addr, args, roots, login).await;
    terminate(&mut child)?;
    result
}

async fn mosquitto(args: &MqttsArgs, certs: &Path, roots: &Arc<rustls::RootCertStore>) -> anyhow::Result<(f64, u64)> {
    let port = free_port()?;
    let conf = certs.join("mosquitto.conf");
    let path = |f: &str| certs.join(f).display().to_string();
    std::fs::write(
        &conf,
        // `user root`: started as root, mosquitto would drop to its own user before reading the
        // key in this private temp dir (no effect when not root).
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\ncertfile {}\nkeyfile {}\n",
            path("server.pem"),
            path("server.key")
        ),
    )?;
    let bin =
        ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("mosquitto");
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting mosquitto")?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        let _ = child.kill();
        bail!("mosquitto did not listen on {addr}");
    }
    let result = drive(addr, args, roots, Login::Anonymous).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Clients connecting in a loop until the time is up: (connections per second, failures).
async fn drive(
    addr: SocketAddr,
    args: &MqttsArgs,
    roots: &Arc<rustls::RootCertStore>,
    login: Login,
) -> anyhow::Result<(f64, u64)> {
    let plain = client_config(roots, None)?;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut clients = Vec::new();
    for i in 0..args.clients {
        let (config, client_id, connect) = match &login {
            Login::Anonymous => (plain.clone(), format!("anon-{i}"), wire::connect(&format!("anon-{i}"), None, None)),
            Login::Token(tokens) => {
                let (id, token) = &tokens[i];
                (plain.clone(), id.clone(), wire::connect(id, Some(id), Some(token)))
            }
            Login::Certificate(identities) => {
                let (id, config) = &identities[i];
                (config.clone(), id.clone(), wire::connect(id, None, None))
            }
        };
        let (done, failed) = (done.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let connector = tokio_rustls::TlsConnector::from(config);
            while Instant::now() < deadline {
                match once(&connector, addr, &connect).await {
                    Ok(()) => done.fetch_add(1, Relaxed),
                    Err(e) => {
                        if failed.fetch_add(1, Relaxed) == 0 {
                            eprintln!("{client_id}: {e:#}");
                        }
                        0
                    }
                };
            }
        }));
    }
    for c in clients {
        c.await?;
    }
    Ok((done.load(Relaxed) as f64 / started.elapsed().as_secs_f64(), failed.load(Relaxed)))
}

/// One connection: TCP, TLS handshake, CONNECT, CONNACK accepted, DISCONNECT.
async fn once(connector: &tokio_rustls::TlsConnector, addr: SocketAddr, connect: &[u8]) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
    tls.write_all(connect).await?;
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut ack)).await.context("no CONNACK")??;
    anyhow::ensure!(ack[0] == 0x20 && ack[3] == 0, "CONNECT refused: {ack:?}");
    tls.write_all(&[0xe0, 0]).await?;
    let _ = tls.shutdown().await;
    Ok(())
}
