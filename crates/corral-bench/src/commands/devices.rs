//! The devices that answer: N connections, each subscribed QoS 1 to `devices/<id>/commands/+`,
//! each read by its own task that acknowledges every command (PUBACK) and answers it at once on
//! `<its topic>/response`, QoS 1, with `{"status":"succeeded","payload":{"seq":k}}` — `k` taken
//! from the command's payload. The same devices serve both systems: what differs is who sent the
//! command and who hears the answer. Every command received is counted per `seq`, so a command
//! delivered twice shows as a duplicate.

use crate::mqtt::conn::{Client, Login};
use crate::mqtt::wire;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

const CONCURRENT_CONNECTS: usize = 256;

pub struct Devices {
    readers: JoinSet<()>,
    /// The `seq` of every command a device received, in arrival order.
    received: mpsc::UnboundedReceiver<u64>,
    closed: Arc<AtomicU64>,
}

impl Devices {
    pub async fn connect(addr: SocketAddr, ids: &[String], tokens: Option<&[String]>) -> anyhow::Result<Devices> {
        let gate = Arc::new(Semaphore::new(CONCURRENT_CONNECTS));
        let (tx, received) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicU64::new(0));
        let mut connecting = JoinSet::new();
        for (i, id) in ids.iter().enumerate() {
            let (id, token, gate) = (id.clone(), tokens.and_then(|t| t.get(i)).cloned(), gate.clone());
            connecting.spawn(async move {
                let _permit = gate.acquire_owned().await?;
                let login = token.as_deref().map_or(Login::Anonymous, Login::Device);
                let mut client = Client::connect(addr, &id, login).await.with_context(|| format!("device {id}"))?;
                client.subscribe(&format!("devices/{id}/commands/+"), 1).await?;
                anyhow::Ok(client)
            });
        }
        let mut readers = JoinSet::new();
        while let Some(joined) = connecting.join_next().await {
            readers.spawn(answer(joined??, tx.clone(), closed.clone()));
        }
        Ok(Devices { readers, received, closed })
    }

    /// Every command received so far.
    pub fn received(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok(seq) = self.received.try_recv() {
            out.push(seq);
        }
        out
    }

    pub fn closed(&self) -> u64 {
        self.closed.load(Relaxed)
    }

    pub async fn close(mut self) {
        self.readers.shutdown().await;
    }
}

/// One device: PUBACK each command, answer it, ignore the broker's PUBACKs of the answers.
async fn answer(mut client: Client, tx: mpsc::UnboundedSender<u64>, closed: Arc<AtomicU64>) {
    let mut out = Vec::with_capacity(512);
    let mut next_id: u16 = 0;
    loop {
        out.clear();
        let more = client
            .rx
            .read(&mut client.stream, |kind, flags, body| {
                if kind != wire::PUBLISH {
                    return;
                }
                let Some((topic, packet_id, payload)) = wire::publish_parts(flags, body) else { return };
                if packet_id != 0 {
                    wire::put_puback(&mut out, packet_id);
                }
                let Some(seq) = wire::find_u64(payload, b"\"seq\":") else { return };
                let _ = tx.send(seq);
                let mut response = topic.to_vec();
                response.extend_from_slice(b"/response");
                let mut body = br#"{"status":"succeeded","payload":{"seq":"#.to_vec();
                wire::put_u64(&mut body, seq);
                body.extend_from_slice(b"}}");
                next_id = next_id % u16::MAX + 1;
                wire::put_publish(&mut out, &response, 1, next_id, &body);
            })
            .await;
        let open = matches!(more, Ok(true)) && (out.is_empty() || client.stream.write_all(&out).await.is_ok());
        if !open {
            closed.fetch_add(1, Relaxed);
            return;
        }
    }
}

/// How long [`Devices::received`] is given after the last answer for late duplicates.
pub const GRACE: Duration = Duration::from_millis(500);
