//! The simulated fleet of a firmware campaign: N device connections, each subscribed QoS 1 to
//! `devices/<id>/commands/+`, and a pool of installers that do what a device does with a
//! `firmware.update` command (docs/campaigns.md, "The device's side"):
//!
//! 1. report `downloading` (a QoS 1 merge into `devices/<id>/twin/reported`, over the device's
//!    own connection);
//! 2. download the granted URL over HTTP, hashing as the bytes come;
//! 3. check the size and SHA-256 against the manifest and the Ed25519 signature with the key the
//!    fleet trusts (fetched once, as if provisioned), then report `downloaded`, `installing` and
//!    `succeeded` — or `failed` with the reason.
//!
//! Every `firmware.update` a device receives is counted, so a device notified twice shows.

use crate::mqtt::conn::{Client, Login};
use crate::mqtt::wire;
use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

const CONCURRENT_CONNECTS: usize = 256;

/// What the fleet did, counted as it happened.
#[derive(Default)]
pub struct Counts {
    pub notified: AtomicU64,
    /// `firmware.update` commands beyond the first at a device.
    pub notified_again: AtomicU64,
    pub installed: AtomicU64,
    pub refused: AtomicU64,
    pub bytes: AtomicU64,
    pub closed: AtomicU64,
}

struct Job {
    device: usize,
    payload: Value,
}

pub struct Agents {
    tasks: JoinSet<()>,
    pub counts: Arc<Counts>,
}

impl Agents {
    /// Connects the devices and starts `installers` concurrent installers that download from
    /// `base` (Corral's HTTP URL) and trust `public_key` (base64).
    pub async fn connect(
        addr: SocketAddr,
        base: &str,
        ids: &[String],
        tokens: &[String],
        public_key: &str,
        installers: usize,
    ) -> anyhow::Result<Agents> {
        let key: [u8; 32] = B64.decode(public_key)?.try_into().map_err(|_| anyhow::anyhow!("a public key of 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key)?;
        let counts = Arc::new(Counts::default());
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<Job>();
        let gate = Arc::new(Semaphore::new(CONCURRENT_CONNECTS));
        let mut connecting = JoinSet::new();
        for (i, (id, token)) in ids.iter().zip(tokens).enumerate() {
            let (id, token, gate) = (id.clone(), token.clone(), gate.clone());
            connecting.spawn(async move {
                let _permit = gate.acquire_owned().await?;
                let mut client =
                    Client::connect(addr, &id, Login::Device(&token)).await.with_context(|| format!("device {id}"))?;
                client.subscribe(&format!("devices/{id}/commands/+"), 1).await?;
                anyhow::Ok((i, client))
            });
        }
        let mut tasks = JoinSet::new();
        let mut reports = vec![None; ids.len()];
        while let Some(joined) = connecting.join_next().await {
            let (i, client) = joined??;
            let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
            reports[i] = Some(tx);
            tasks.spawn(device(client, i, ids[i].clone(), rx, jobs_tx.clone(), counts.clone()));
        }
        let reports: Arc<Vec<_>> = Arc::new(reports.into_iter().map(Option::unwrap).collect());
        let http = reqwest::Client::builder().pool_max_idle_per_host(installers).build()?;
        let jobs = Arc::new(tokio::sync::Mutex::new(jobs_rx));
        for _ in 0..installers.max(1) {
            let (jobs, reports, counts, http, base, ids) =
                (jobs.clone(), reports.clone(), counts.clone(), http.clone(), base.to_string(), ids.to_vec());
            tasks.spawn(async move {
                loop {
                    let Some(job) = jobs.lock().await.recv().await else { return };
                    let report = |state: &str, reason: Option<&str>| {
                        let campaign = job.payload["campaign"].as_str().unwrap_or_default();
                        let mut entry = serde_json::json!({ "state": state });
                        if let Some(reason) = reason {
                            entry["reason"] = reason.into();
                        }
                        let body = serde_json::json!({"campaigns": {campaign: entry}}).to_string();
                        let topic = format!("devices/{}/twin/reported", ids[job.device]);
                        let _ = reports[job.device].send([topic.into_bytes(), body.into_bytes()].join(&0u8));
                    };
                    report("downloading", None);
                    match install(&http, &base, &job.payload, &key, &counts).await {
                        Ok(()) => {
                            report("downloaded", None);
                            report("installing", None);
                            report("succeeded", None);
                            counts.installed.fetch_add(1, Relaxed);
                        }
                        Err(e) => {
                            report("failed", Some(&format!("{e:#}")));
                            counts.refused.fetch_add(1, Relaxed);
                        }
                    }
                }
            });
        }
        Ok(Agents { tasks, counts })
    }

    pub async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Downloads, checks and "installs" one update.
async fn install(http: &reqwest::Client, base: &str, payload: &Value, key: &VerifyingKey, counts: &Counts) -> anyhow::Result<()> {
    let artifact = &payload["artifact"];
    let url = payload["url"].as_str().context("no url in the command")?;
    let mut response = http.get(format!("{base}{url}")).send().await?.error_for_status()?;
    let (mut hash, mut size) = (Sha256::new(), 0u64);
    while let Some(chunk) = response.chunk().await? {
        hash.update(&chunk);
        size += chunk.len() as u64;
    }
    counts.bytes.fetch_add(size, Relaxed);
    let sha256 = format!("{:x}", hash.finalize());
    let field = |k: &str| artifact[k].as_str().with_context(|| format!("no artifact.{k}"));
    anyhow::ensure!(Some(size) == artifact["size"].as_u64(), "size {size} is not the manifest's");
    anyhow::ensure!(sha256 == field("sha256")?, "sha256 mismatch");
    let message =
        format!("corral-artifact-v1\nname: {}\nversion: {}\nsize: {size}\nsha256: {sha256}\n", field("name")?, field("version")?);
    let signature: [u8; 64] =
        B64.decode(field("signature")?)?.try_into().map_err(|_| anyhow::anyhow!("a signature of 64 bytes"))?;
    key.verify(message.as_bytes(), &Signature::from_bytes(&signature)).context("bad signature")?;
    Ok(())
}

/// One device's connection: PUBACK commands, hand `firmware.update`s to the installers, publish
/// the reports the installers send it (topic and body joined by a NUL byte).
async fn device(
    mut client: Client,
    index: usize,
    id: String,
    mut reports: mpsc::UnboundedReceiver<Vec<u8>>,
    jobs: mpsc::UnboundedSender<Job>,
    counts: Arc<Counts>,
) {
    let (mut out, mut next_id, mut updates) = (Vec::with_capacity(512), 0u16, 0u64);
    let prefix = format!("devices/{id}/commands/");
    let (mut rd, mut wr) = client.stream.into_split();
    loop {
        out.clear();
        let report = tokio::select! {
            more = client.rx.read(&mut rd, |kind, flags, body| {
                let Some((topic, packet_id, payload)) = (kind == wire::PUBLISH).then(|| wire::publish_parts(flags, body)).flatten() else {
                    return;
                };
                if packet_id != 0 {
                    wire::put_puback(&mut out, packet_id);
                }
                let Ok(command) = serde_json::from_slice::<Value>(payload) else { return };
                if topic.starts_with(prefix.as_bytes()) && command["name"] == "firmware.update" {
                    updates += 1;
                    let counter = if updates == 1 { &counts.notified } else { &counts.notified_again };
                    counter.fetch_add(1, Relaxed);
                    let _ = jobs.send(Job { device: index, payload: command["payload"].clone() });
                }
            }) => match more {
                Ok(true) => None,
                _ => {
                    counts.closed.fetch_add(1, Relaxed);
                    return;
                }
            },
            Some(report) = reports.recv() => Some(report),
        };
        if let Some(report) = report {
            let (topic, body) = report.split_at(report.iter().position(|&b| b == 0).unwrap_or(0));
            next_id = next_id % u16::MAX + 1;
            wire::put_publish(&mut out, topic, 1, next_id, &body[1..]);
        }
        if !out.is_empty() && wr.write_all(&out).await.is_err() {
            counts.closed.fetch_add(1, Relaxed);
            return;
        }
    }
}
