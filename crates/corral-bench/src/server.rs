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
        let mut child = Command::new(binary)
            .args(["serve", "--http", "127.0.0.1:0", "--log", "warn,corral=info", "--data-dir"])
            .arg(data_dir.path())
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
        let addr = rx.recv_timeout(Duration::from_secs(60)).context("corral did not start")?;
        Ok(Server { child, base: format!("http://{addr}"), data_dir })
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
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("corral exited with {status} after SIGTERM");
        }
        Ok(self.data_dir)
    }
}

/// Benchmarks write to disk for real; /tmp may be a tmpfs where fsync costs nothing.
fn bench_tmp() -> PathBuf {
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
