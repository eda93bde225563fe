//! The two brokers under test, each started here on a free loopback port: `corral serve` (fresh
//! data directory, `--mqtt-allow-anonymous` so fan-out, pairs and idle need no registrations) and
//! Mosquitto with a minimal config (one loopback listener, anonymous, persistence off as shipped).
//! Both inherit this process's raised file-descriptor limit. Also: their RSS and CPU time from
//! /proc, device registration and row counts through Corral's REST API.

use crate::server::{ADMIN_TOKEN, bench_tmp};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Broker {
    pub name: &'static str,
    child: Child,
    pub mqtt: SocketAddr,
    /// Corral's REST base URL.
    pub http: Option<String>,
    _dir: tempfile::TempDir,
}

/// Raises RLIMIT_NOFILE (soft and hard) to `want` if it is lower; children inherit it.
pub fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let new = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max.max(want) };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        let fallback = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &fallback) };
        return Ok(lim.rlim_max);
    }
    Ok(want)
}

impl Broker {
    pub fn corral(binary: &Path) -> anyhow::Result<Broker> {
        let dir = tempfile::Builder::new().prefix("corral-bench-mqtt-").tempdir_in(bench_tmp())?;
        let corral = crate::server::start(binary, dir.path(), &["--mqtt-allow-anonymous".to_string()])?;
        Ok(Broker { name: "corral", child: corral.child, mqtt: corral.mqtt, http: Some(corral.http), _dir: dir })
    }

    pub fn mosquitto() -> anyhow::Result<Broker> {
        Broker::mosquitto_with("")
    }

    /// Mosquitto with `extra` lines added to its minimal config.
    pub fn mosquitto_with(extra: &str) -> anyhow::Result<Broker> {
        let dir = tempfile::Builder::new().prefix("mosquitto-bench-").tempdir_in(bench_tmp())?;
        let port = crate::server::free_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}"))?;
        let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("mosquitto");
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (apt-get install mosquitto)")?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(Broker { name: "mosquitto", child, mqtt: addr, http: None, _dir: dir });
            }
            if let Some(status) = child.try_wait()? {
                bail!("mosquitto exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        bail!("mosquitto did not listen on {addr}")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Current resident set size (VmRSS), bytes.
    pub fn rss_bytes(&self) -> u64 {
        crate::server::proc_status_bytes(self.pid(), "VmRSS")
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the broker after a run whose `outcome` it gave, adding to the run's remarks that it
    /// had exited on its own, if it had.
    pub fn finish(mut self, outcome: anyhow::Result<crate::mqtt::Run>) -> anyhow::Result<crate::mqtt::Run> {
        let (alive, name) = (self.alive(), self.name);
        self.stop();
        let (figures, mut notes) = outcome?;
        if !alive {
            notes.push(format!("{name} exited during the run"));
        }
        Ok((figures, notes))
    }

    pub fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..300 {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Registers `n` devices `mqtt-bench-00000`, ... and returns (id, token) pairs.
    pub async fn register(&self, http: &reqwest::Client, n: usize) -> anyhow::Result<Vec<(String, String)>> {
        let base = self.http.as_deref().context("not corral")?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("mqtt-bench-{i:05}");
            let r: Value = http
                .post(format!("{base}/api/v1/devices"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"id": id}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let token = r["token"].as_str().context("no token in the registration answer")?.to_string();
            out.push((id, token));
        }
        Ok(out)
    }

    /// `SELECT count(*) FROM telemetry` (0 when the table does not exist yet).
    pub async fn stored_rows(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        let base = self.http.as_deref().context("not corral")?;
        let r = http
            .post(format!("{base}/api/v1/query"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"sql": "SELECT count(*) FROM telemetry"}))
            .send()
            .await?;
        if !r.status().is_success() {
            return Ok(0);
        }
        let v: Value = r.json().await?;
        Ok(v["rows"][0][0].as_u64().unwrap_or(0))
    }
}

/// utime + stime of a `/proc/<pid>/stat` file, seconds.
pub fn proc_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}
