//! A `corral serve` process the benchmark owns: started on port 0 in a fresh data directory so
//! every run measures the same thing, and so its RSS and disk use can be read afterwards.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// SIGTERM (the server persists its buffer to Parquet) and wait.
    pub fn stop(mut self) -> anyhow::Result<tempfile::TempDir> {
        terminate(&mut self.child).context("corral")?;
        Ok(self.data_dir)
    }
}

/// Starts `corral serve` on a free loopback port with data in `data_dir` (which may hold data of
/// an earlier run) and returns the process and its base URL once it listens.
pub fn spawn(binary: &Path, data_dir: &Path, extra: &[String]) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(binary)
        .args(["serve", "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--log", "warn,corral=info", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("CORRAL_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening proto=http addr=").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Ok((child, format!("http://{addr}"))),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("corral did not start")
        }
    }
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
