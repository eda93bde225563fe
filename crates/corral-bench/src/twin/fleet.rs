//! The fleet under test: N device connections, each subscribed QoS 1 to its own desired topic
//! and read by its own task, which acknowledges every PUBLISH (a QoS 1 subscriber that does not
//! send PUBACKs is soon sent nothing more) and reports each arrival, stamped on the shared clock,
//! to one channel. The tasks live until [`Fleet::close`]; a connection the broker closes is counted.

use crate::mqtt::conn::{Client, Login};
use crate::mqtt::wire;
use anyhow::Context;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Connection handshakes (CONNECT and SUBSCRIBE) in flight at once.
const CONCURRENT_CONNECTS: usize = 256;
const CONNECT_ATTEMPTS: u32 = 3;
/// How long to keep listening for duplicates once every expected change arrived.
const GRACE: Duration = Duration::from_millis(500);

/// One PUBLISH received by a device: which device, the `seq` of its desired document (`None`
/// when it has none, e.g. a document the benchmark did not send), and when, in ns after the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub device: u32,
    pub seq: Option<u64>,
    pub at_ns: u64,
}

/// The connected devices: their reader tasks and the channel they report to.
pub struct Fleet {
    readers: JoinSet<()>,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    /// Connections the broker closed (or that failed) while their task was reading.
    closed: Arc<AtomicU64>,
}

impl Fleet {
    /// Connects one client per id (with its token when `tokens` is given, else anonymously) and
    /// subscribes it to its desired topic; fails if any device cannot, after retries.
    pub async fn connect(addr: SocketAddr, ids: &[String], tokens: Option<&[String]>, base: Instant) -> anyhow::Result<Fleet> {
        let gate = Arc::new(Semaphore::new(CONCURRENT_CONNECTS));
        let (tx, arrivals) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicU64::new(0));
        let mut connecting = JoinSet::new();
        for (i, id) in ids.iter().enumerate() {
            let token = tokens.and_then(|t| t.get(i)).cloned();
            connecting.spawn(connect_one(addr, i, id.clone(), token, gate.clone()));
        }
        let mut readers = JoinSet::new();
        while let Some(joined) = connecting.join_next().await {
            // On an error the sets are dropped: the other connections are aborted and closed.
            let (i, client) = joined??;
            readers.spawn(read(client, i as u32, base, tx.clone(), closed.clone()));
        }
        Ok(Fleet { readers, arrivals, closed })
    }

    /// Every arrival so far and from now on, until `expected` distinct `seq`s have arrived (then
    /// [`GRACE`] more, for duplicates) or `drain` has passed.
    pub async fn collect(&mut self, expected: usize, drain: Duration) -> Vec<Arrival> {
        let deadline = Instant::now() + drain;
        let (mut out, mut seen) = (Vec::new(), HashSet::new());
        let mut until = if expected == 0 { Instant::now() + GRACE } else { deadline };
        while let Ok(Some(a)) = tokio::time::timeout_at(until, self.arrivals.recv()).await {
            if let Some(seq) = a.seq
                && seen.insert(seq)
                && seen.len() == expected
            {
                until = Instant::now() + GRACE;
            }
            out.push(a);
        }
        out
    }

    pub fn closed(&self) -> u64 {
        self.closed.load(Relaxed)
    }

    /// Ends every reader task, which closes the connections.
    pub async fn close(mut self) {
        self.readers.shutdown().await;
    }
}

async fn connect_one(
    addr: SocketAddr,
    i: usize,
    id: String,
    token: Option<String>,
    gate: Arc<Semaphore>,
) -> anyhow::Result<(usize, Client)> {
    let _permit = gate.acquire_owned().await?;
    let login = token.as_deref().map_or(Login::Anonymous, Login::Device);
    let mut attempt = 0;
    loop {
        let outcome = async {
            let mut client = Client::connect(addr, &id, login).await?;
            client.subscribe(&super::desired_topic(&id), 1).await?;
            anyhow::Ok(client)
        }
        .await;
        attempt += 1;
        match outcome {
            Ok(client) => return Ok((i, client)),
            Err(e) if attempt >= CONNECT_ATTEMPTS => {
                return Err(e).with_context(|| format!("device {id}: {attempt} attempts to connect and subscribe"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100 << attempt)).await,
        }
    }
}

/// One device's connection: PUBACK every QoS 1 PUBLISH, report every arrival.
async fn read(mut client: Client, device: u32, base: Instant, tx: mpsc::UnboundedSender<Arrival>, closed: Arc<AtomicU64>) {
    let mut acks = Vec::with_capacity(64);
    loop {
        acks.clear();
        let more = client
            .rx
            .read(&mut client.stream, |kind, flags, body| {
                if kind != wire::PUBLISH {
                    return;
                }
                let at_ns = base.elapsed().as_nanos() as u64;
                let Some((_, packet_id, payload)) = wire::publish_parts(flags, body) else { return };
                if packet_id != 0 {
                    wire::put_puback(&mut acks, packet_id);
                }
                let _ = tx.send(Arrival { device, seq: seq_of(payload), at_ns });
            })
            .await;
        let open = matches!(more, Ok(true)) && (acks.is_empty() || client.stream.write_all(&acks).await.is_ok());
        if !open {
            closed.fetch_add(1, Relaxed);
            return;
        }
    }
}

/// `desired.seq` of a desired document `{"version": N, "desired": {"seq": k, ...}}`.
pub fn seq_of(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(payload).ok()?.get("desired")?.get("seq")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seq_is_read_from_a_desired_document() {
        assert_eq!(seq_of(br#"{"version":3,"desired":{"seq":17}}"#), Some(17));
        assert_eq!(seq_of(br#"{"version": 3, "desired": {"fw": "2.1", "seq": 4}}"#), Some(4));
        assert_eq!(seq_of(br#"{"version":1,"desired":{}}"#), None);
        assert_eq!(seq_of(b"not json"), None);
    }
}
