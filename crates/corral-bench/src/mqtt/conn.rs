//! One client connection on tokio: TCP connect from a rotating loopback source address (so tens of
//! thousands of connections never exhaust one address's ephemeral ports, nor meet an earlier run's
//! TIME_WAIT), the CONNECT/CONNACK and SUBSCRIBE/SUBACK handshakes, and a reused receive buffer
//! that hands out whole packets.

use super::wire;
use anyhow::{Context, bail};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connections opened per source address before moving to the next one.
const PER_SOURCE: u64 = 10_000;
static OPENED: AtomicU64 = AtomicU64::new(0);

/// The next source address: 127.1.0.1, ... (10,000 connections each, never reused in a process).
fn next_source() -> IpAddr {
    let block = OPENED.fetch_add(1, Ordering::Relaxed) / PER_SOURCE;
    IpAddr::V4(Ipv4Addr::new(127, 1 + (block / 250 / 250) as u8, (block / 250 % 250) as u8, (block % 250 + 1) as u8))
}

/// Receive buffer: bytes read but not yet consumed as whole packets.
pub struct FrameBuf {
    buf: Vec<u8>,
    len: usize,
}

impl Default for FrameBuf {
    fn default() -> Self {
        FrameBuf { buf: vec![0; 64 * 1024], len: 0 }
    }
}

impl FrameBuf {
    /// One read, then `f(kind, flags, body)` for every complete packet. `Ok(false)` at EOF.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R, f: impl FnMut(u8, u8, &[u8])) -> anyhow::Result<bool> {
        if self.len == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = r.read(&mut self.buf[self.len..]).await?;
        if n == 0 {
            return Ok(false);
        }
        self.len += n;
        let used = wire::frames(&self.buf[..self.len], f).map_err(anyhow::Error::msg)?;
        self.buf.copy_within(used..self.len, 0);
        self.len -= used;
        Ok(true)
    }

    /// Reads until a packet of `kind` arrives and returns its body (earlier packets are ignored).
    async fn expect<R: AsyncRead + Unpin>(&mut self, r: &mut R, kind: u8) -> anyhow::Result<Vec<u8>> {
        let mut found = None;
        while found.is_none() {
            let more = self
                .read(r, |k, _, body| {
                    if k == kind && found.is_none() {
                        found = Some(body.to_vec());
                    }
                })
                .await?;
            if !more && found.is_none() {
                bail!("connection closed by the broker while waiting for packet type {kind}");
            }
        }
        Ok(found.unwrap_or_default())
    }
}

/// Credentials of a connection: none (anonymous), a device (id, token) or an application token.
#[derive(Clone, Copy)]
pub enum Login<'a> {
    Anonymous,
    Device(&'a str),
    Token(&'a str),
}

/// A connected MQTT client.
pub struct Client {
    pub stream: TcpStream,
    pub rx: FrameBuf,
}

impl Client {
    pub async fn connect(addr: SocketAddr, client_id: &str, login: Login<'_>) -> anyhow::Result<Client> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(next_source(), 0)).context("binding a loopback source address")?;
        let mut stream = socket.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let connect = match login {
            Login::Anonymous => wire::connect(client_id, None, None),
            Login::Device(token) => wire::connect(client_id, Some(client_id), Some(token)),
            Login::Token(token) => wire::connect(client_id, Some("token"), Some(token)),
        };
        stream.write_all(&connect).await?;
        let mut rx = FrameBuf::default();
        let ack = tokio::time::timeout(Duration::from_secs(30), rx.expect(&mut stream, wire::CONNACK))
            .await
            .context("no CONNACK within 30 s")??;
        if ack.get(1).copied() != Some(0) {
            bail!("CONNECT of {client_id} refused, return code {:?}", ack.get(1));
        }
        Ok(Client { stream, rx })
    }

    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> anyhow::Result<()> {
        self.stream.write_all(&wire::subscribe(1, filter, qos)).await?;
        let ack = tokio::time::timeout(Duration::from_secs(30), self.rx.expect(&mut self.stream, wire::SUBACK))
            .await
            .context("no SUBACK within 30 s")??;
        match ack.get(2) {
            Some(granted) if *granted < 0x80 => Ok(()),
            other => bail!("SUBSCRIBE {filter} refused ({other:?})"),
        }
    }
}
