//! A `corral serve` process the benchmark owns: started on port 0 in a fresh data directory so
//! every run measures the same thing, and so its RSS and disk use can be read afterwards.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: tempfile::TempDir,
}

impl Server {
    pub fn start(binary: &Path, extra: &[String]) -> anyhow::Result<Server> {
        let data_dir = tempfile::Builder::new().prefix("corral-bench-").tempdir_in(bench_tmp())?;
        let (child, base) = spawn(binary, data_dir.path(), extra)?;
        Ok(Server { child, base, data_dir })
    }

    /// Peak resident set size so far (VmHWM), bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        proc_status_bytes(self.child.id(), "VmHWM")
    }

    /// SIGTERM (the server persists its buffer to Parquet) and wait.
    pub fn stop(mut self) -> anyhow::Result<tempfile::TempDir> {
        terminate(&mut self.child).context("corral")?;
        Ok(self.data_dir)
    }
}

/// A started `corral serve` and where it listens.
pub struct Listening {
    pub child: Child,
    /// Base URL of the HTTP listener.
    pub http: String,
    pub mqtt: SocketAddr,
    /// The CoAP listener (UDP).
    pub coap: Option<SocketAddr>,
    /// The CoAP over DTLS listener (UDP).
    pub coaps: Option<SocketAddr>,
    /// The MQTTS listener, when started with a certificate.
    pub mqtts: Option<SocketAddr>,
}

/// Starts `corral serve` with HTTP and MQTT on free loopback ports and data in `data_dir` (which
/// may hold data of an earlier run); returns once both listen. Its warnings, errors and refusals
/// are echoed to stderr; with `CORRAL_BENCH_LOG` set (a log filter), everything it logs at that level.
pub fn start(binary: &Path, data_dir: &Path, extra: &[String]) -> anyhow::Result<Listening> {
    let log = std::env::var("CORRAL_BENCH_LOG").ok();
    let mut child = Command::new(binary)
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
            "--coap",
            "127.0.0.1:0",
            "--coaps",
            "127.0.0.1:0",
            "--pg",
            "127.0.0.1:0",
            "--log",
        ])
        .arg(log.as_deref().unwrap_or("warn,corral=info"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("CORRAL_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let verbose = log.is_some();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if verbose || line.contains("WARN") || line.contains("ERROR") || line.contains("refused") {
                eprintln!("corral: {line}");
            }
            for proto in ["http", "mqtts", "mqtt", "coaps", "coap"] {
                if let Some(rest) = line.split(&format!("listening proto={proto} addr=")).nth(1) {
                    let _ = tx.send((proto, rest.split_whitespace().next().unwrap_or("").to_string()));
                }
            }
        }
    });
    // The MQTT and CoAP listeners are logged before the HTTP one.
    let (mut http, mut mqtt, mut mqtts, mut coap, mut coaps) = (None, None, None, None, None);
    while http.is_none() {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(("http", addr)) => http = Some(format!("http://{addr}")),
            Ok(("coap", addr)) => coap = Some(addr.parse().context("CoAP listen address")?),
            Ok(("coaps", addr)) => coaps = Some(addr.parse().context("CoAP over DTLS listen address")?),
            Ok(("mqtts", addr)) => mqtts = Some(addr.parse().context("MQTTS listen address")?),
            Ok((_, addr)) => mqtt = Some(addr.parse().context("MQTT listen address")?),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("corral did not start (no `listening proto=http` line)")
            }
        }
    }
    let Some(mqtt) = mqtt else { bail!("corral started without its MQTT listener") };
    Ok(Listening { child, http: http.expect("set"), mqtt, mqtts, coap, coaps })
}

/// [`start`], for callers that only use HTTP: the process and its base URL.
pub fn spawn(binary: &Path, data_dir: &Path, extra: &[String]) -> anyhow::Result<(Child, String)> {
    let listening = start(binary, data_dir, extra)?;
    Ok((listening.child, listening.http))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A byte figure from `/proc/<pid>/status` (`VmRSS`, `VmHWM`: reported in kB), 0 if unreadable.
pub fn proc_status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// SIGTERM a child and wait for it; an error unless it exits 0.
pub fn terminate(child: &mut Child) -> anyhow::Result<()> {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait()?;
    if !status.success() {
        bail!("{} exited with {status} after SIGTERM", child.id());
    }
    Ok(())
}

/// Benchmarks write to disk for real; /tmp may be a tmpfs where fsync costs nothing.
pub fn bench_tmp() -> PathBuf {
    std::env::var_os("CORRAL_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::current_dir().unwrap_or_default())
}

pub fn dir_bytes(dir: &Path, extension: &str) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == extension) {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// The disk's fsync latency where the servers keep their data (p50, p99 in ms over `n` 4 KiB
/// appends each followed by `fdatasync`): the floor under any figure that waits for durable
/// commits, so a report can say how much of a latency is the disk's.
pub fn fsync_latency_ms(n: usize) -> anyhow::Result<(f64, f64)> {
    use std::io::Write;
    let dir = tempfile::tempdir_in(bench_tmp())?;
    let mut file = std::fs::File::create(dir.path().join("probe"))?;
    let block = [0x5a_u8; 4096];
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let start = std::time::Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        took.push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    took.sort_unstable();
    let at = |q: f64| crate::mqtt::stats::percentile(&took, q).unwrap_or(0) as f64 / 1e3;
    Ok((at(50.0), at(99.0)))
}
