//! One client connection: the task that reads packets, runs the session's protocol flows and
//! writes what the session queue holds. One task per connection (no separate reader/writer
//! tasks) keeps an idle connection small.
//!
//! Inbound publishes go through two ordered stages so a pipelining client is not serialised on
//! fsyncs, yet acknowledgements leave in the order the publishes arrived: `staged` holds
//! publishes waiting for their platform write (QoS 0/1 are routed before it, QoS 2 after),
//! `acks` holds acknowledgements waiting for the state log barrier.

mod connect;
mod inbound;
mod outbound;
mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};

pub(crate) use inbound::platform_publish_of;
pub(crate) use transport::Transport;

use crate::codec::{Disconnect, LastWill, Packet, ProtocolVersion, ReasonCode, encode_packet};
use crate::hooks::{DisconnectKind, Identity};
use crate::metrics;
use crate::ratelimit::TokenBucket;
use crate::session::Session;
use crate::state::BrokerState;
use inbound::Staged;
use transport::{Reader, Writer};

/// Why a connection ends; decides the DISCONNECT sent, the will and the hook notification.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Exit {
    /// The client sent DISCONNECT (`with_will` for v5 reason 0x04).
    ClientDisconnect {
        with_will: bool,
    },
    /// The stream ended or failed without DISCONNECT.
    Closed,
    KeepAlive,
    /// Protocol violation; v5 clients get DISCONNECT with this reason.
    Protocol(ReasonCode),
    /// Asked to leave (takeover, kick).
    Kicked {
        reason: ReasonCode,
        kind: DisconnectKind,
        session_continues: bool,
    },
    Shutdown,
    /// 3.1.1 QoS 1/2 platform publish refused: closing is the only negative answer.
    Refused,
}

/// What an ack-stage future yields: the packet to send, or `None` when the state log failed.
type AckFuture = BoxFuture<'static, Option<Packet>>;

/// State of one connected client (after CONNACK). Dropped when the connection ends.
pub(crate) struct Connection {
    state: Arc<BrokerState>,
    reader: Reader,
    writer: Writer,
    rbuf: BytesMut,
    wbuf: BytesMut,
    peer: SocketAddr,
    version: ProtocolVersion,
    client_id: Arc<str>,
    identity: Arc<Identity>,
    /// Tenant the client's own messages carry.
    tenant: Option<Arc<str>>,
    session: Arc<Session>,
    generation: u64,
    /// 1.5 × keep-alive; `None` = no keep-alive.
    keep_alive: Option<Duration>,
    last_packet_at: Instant,
    /// Outbound QoS 1/2 window: min(client's Receive Maximum, config.max_inflight).
    send_window: usize,
    client_max_packet: usize,
    /// What was wrong with the client's last packet, for the DISCONNECT's Reason String.
    problem: Option<String>,
    client_alias_max: u16,
    inbound_aliases: HashMap<u16, Arc<str>>,
    outbound_aliases: HashMap<Arc<str>, u16>,
    /// Boxed: large (properties) and usually absent.
    will: Option<Box<LastWill>>,
    session_expiry_secs: u32,
    staged: FuturesOrdered<BoxFuture<'static, Staged>>,
    /// Entries of `staged` still to be routed: while any is queued, later publishes wait too.
    routes_held: usize,
    acks: FuturesOrdered<AckFuture>,
    /// QoS 1/2 publishes received and not yet acknowledged (Receive Maximum accounting).
    unacked_inbound: usize,
    rate: Option<TokenBucket>,
    throttled_until: Option<Instant>,
    exit: Option<Exit>,
}

/// Decrements the live-task count however the task ends.
struct TaskGuard(Arc<BrokerState>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.live_tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_tasks_done.notify_waiters();
        }
    }
}

/// Runs a connection from the first byte to the close.
pub(crate) async fn run(
    state: Arc<BrokerState>,
    transport: Transport,
    peer: SocketAddr,
    label: &'static str,
    certificate: Option<Vec<u8>>,
) {
    state.live_tasks.fetch_add(1, Ordering::AcqRel);
    let _guard = TaskGuard(state.clone());
    // Boxed: the handshake and teardown futures are big and short-lived; left inline they would
    // inflate every idle connection's task for its whole life.
    let Some(mut conn) = Box::pin(connect::handshake(state.clone(), transport, peer, label, certificate)).await else {
        return;
    };
    metrics::inc(&state.metrics.connections_current);
    let exit = conn.serve().await;
    Box::pin(conn.finish(exit)).await;
    state.metrics.connections_current.fetch_sub(1, Ordering::Relaxed);
}

impl Connection {
    fn is_v5(&self) -> bool {
        self.version == ProtocolVersion::V5
    }

    /// Appends a packet to the write buffer (flushed by the main loop).
    fn send(&mut self, packet: &Packet) {
        let n = encode_packet(packet, self.version, &mut self.wbuf);
        metrics::add(&self.state.metrics.bytes_out, n as u64);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let result = self.writer.write_all(&self.wbuf, self.state.config.write_timeout).await;
        // A fresh buffer per burst: an idle connection keeps no write buffer either.
        self.wbuf = BytesMut::new();
        result
    }

    /// The main loop: until something ends the connection.
    async fn serve(&mut self) -> Exit {
        let mut shutdown = self.state.shutdown.subscribe();
        // One timer serves keep-alive and the rate-limit pause (whichever is due first).
        let timer = tokio::time::sleep(self.keep_alive.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(timer);
        // Messages queued while offline, and anything unacknowledged, go out first.
        self.resend_inflight();
        self.drain();
        loop {
            if self.throttled_until.is_none() && !self.rbuf.is_empty() && !self.inbound_paused() {
                // Packets read before a pause ended (a partial packet decodes to nothing).
                self.on_bytes();
            }
            if let Err(e) = self.flush().await {
                tracing::debug!(client_id = %self.client_id, error = %e, "write failed");
                return Exit::Closed;
            }
            if let Some(exit) = self.exit.take() {
                return exit;
            }
            if *shutdown.borrow() {
                return Exit::Shutdown;
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                self.rbuf = BytesMut::new();
            }
            let throttled = self.throttled_until.is_some();
            let paused = throttled || self.inbound_paused();
            if let Some(until) = self.throttled_until
                && until < timer.deadline().into_std()
            {
                timer.as_mut().reset(until.into());
            }
            tokio::select! {
                _ = shutdown.changed() => return Exit::Shutdown,
                _ = self.session.wake.notified() => self.on_wake(),
                Some(staged) = self.staged.next(), if !self.staged.is_empty() => self.on_dequeued(staged),
                Some(ack) = self.acks.next(), if !self.acks.is_empty() => self.on_ack_ready(ack),
                read = self.reader.read_into(&mut self.rbuf), if !paused => match read {
                    Ok(0) => return Exit::Closed,
                    Ok(n) => {
                        metrics::add(&self.state.metrics.bytes_in, n as u64);
                        self.on_bytes();
                    }
                    Err(e) => {
                        tracing::debug!(client_id = %self.client_id, error = %e, "read failed");
                        return Exit::Closed;
                    }
                },
                _ = &mut timer, if throttled || self.keep_alive.is_some() => {
                    let now = Instant::now();
                    if self.throttled_until.is_some_and(|until| until <= now) {
                        self.throttled_until = None;
                        self.on_bytes();
                    }
                    let mut next = now + Duration::from_secs(3600);
                    if let Some(limit) = self.keep_alive {
                        if self.last_packet_at.elapsed() >= limit {
                            return Exit::KeepAlive;
                        }
                        next = self.last_packet_at + limit;
                    }
                    if let Some(until) = self.throttled_until {
                        next = next.min(until);
                    }
                    timer.as_mut().reset(next.into());
                }
            }
        }
    }

    /// The session was poked: a kick/takeover, or messages to send.
    fn on_wake(&mut self) {
        {
            let st = self.session.lock();
            let kick = st.kick.filter(|(generation, _)| *generation == self.generation).map(|(_, k)| k);
            if let Some(k) = kick {
                self.exit = Some(Exit::Kicked { reason: k.reason, kind: k.kind, session_continues: k.session_continues });
                return;
            }
            if !st.owned_by(self.generation) {
                self.exit = Some(Exit::Kicked {
                    reason: ReasonCode::SESSION_TAKEN_OVER,
                    kind: DisconnectKind::Takeover,
                    session_continues: true,
                });
                return;
            }
        }
        self.drain();
    }

    /// Decodes and handles every complete packet in the read buffer.
    fn on_bytes(&mut self) {
        let max = self.state.config.max_packet_size as usize;
        while self.exit.is_none() && self.throttled_until.is_none() && !self.inbound_paused() {
            match crate::codec::decode_packet(&mut self.rbuf, self.version, max) {
                Ok(Some(packet)) => {
                    self.last_packet_at = Instant::now();
                    self.on_packet(packet);
                }
                Ok(None) => break,
                Err(e) => {
                    metrics::inc(&self.state.metrics.protocol_errors);
                    tracing::info!(client_id = %self.client_id, peer = %self.peer, error = %e, "bad packet, disconnecting");
                    self.problem = Some(e.to_string());
                    self.exit = Some(Exit::Protocol(e.reason_code()));
                }
            }
        }
        self.drain();
    }

    /// After a protocol error, reads and drops what the client is still sending (the rest of an
    /// oversized PUBLISH, say) until it closes, for a bounded time and size. Closing a socket with
    /// unread bytes sends a TCP reset, and a reset makes the client discard the DISCONNECT that
    /// says why (paho then reports "unspecified error" instead of 0x95 Packet too large).
    async fn drain_unread(&mut self) {
        const LINGER: Duration = Duration::from_secs(2);
        const MAX_BYTES: usize = 64 << 20;
        let mut drained = 0usize;
        let drain = async {
            loop {
                self.rbuf.clear();
                match self.reader.read_into(&mut self.rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
                if drained > MAX_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        self.rbuf = BytesMut::new();
    }

    /// Sends the closing DISCONNECT (v5), handles the will, releases the session, notifies.
    async fn finish(&mut self, exit: Exit) {
        let disconnect_reason = match exit {
            Exit::Protocol(reason) => Some(reason),
            Exit::Kicked { reason, .. } => Some(reason),
            Exit::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            Exit::KeepAlive => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            Exit::ClientDisconnect { .. } | Exit::Closed | Exit::Refused => None,
        };
        if let (Some(reason), true) = (disconnect_reason, self.is_v5()) {
            self.wbuf.clear();
            let mut disconnect = Disconnect::new(reason);
            let text = self.problem.take().unwrap_or_else(|| reason.description().to_string());
            // Only where it fits the client's Maximum Packet Size (MQTT 5 §3.14.2.2.3).
            if text.len() + 16 <= self.client_max_packet {
                disconnect.properties.reason_string = Some(text);
            }
            self.send(&Packet::Disconnect(disconnect));
            let _ = self.flush().await;
        } else {
            let _ = self.flush().await;
        }
        self.writer.shutdown().await;
        if matches!(exit, Exit::Protocol(_)) {
            self.drain_unread().await;
        }
        self.settle_staged().await;

        let kind = match exit {
            Exit::ClientDisconnect { with_will: false } => DisconnectKind::Clean,
            Exit::ClientDisconnect { with_will: true } | Exit::Closed => DisconnectKind::Will,
            Exit::KeepAlive => {
                metrics::inc(&self.state.metrics.keep_alive_timeouts);
                DisconnectKind::Timeout
            }
            Exit::Protocol(_) | Exit::Refused => DisconnectKind::ProtocolError,
            Exit::Kicked { kind, .. } => kind,
            Exit::Shutdown => DisconnectKind::Kicked,
        };
        match exit {
            // A clean DISCONNECT discards the will; a stopping broker cannot deliver it anyway.
            Exit::ClientDisconnect { with_will: false } | Exit::Shutdown => {}
            // The session continues under the new connection: only an undelayed will goes out.
            Exit::Kicked { session_continues: true, .. } => {
                if let Some(will) = self.will.take()
                    && will.properties.will_delay_interval.unwrap_or(0) == 0
                {
                    self.publish_will_now(will).await;
                }
            }
            _ => self.release_will().await,
        }
        self.state.detach(&self.session, self.generation);
        tracing::debug!(client_id = %self.client_id, ?exit, "connection closed");
        self.state.hooks.on_disconnected(&self.identity, &self.client_id, kind);
    }

    /// Drops any unacknowledged in-progress publishes and reports the exit if not yet set.
    fn fail(&mut self, exit: Exit) {
        self.exit.get_or_insert(exit);
    }
}

#[cfg(test)]
mod size_tests {
    /// The per-connection task is the biggest per-idle-connection cost after the socket; keep
    /// an eye on it (the budget for an idle connection is ~4 KB in total).
    #[tokio::test]
    async fn connection_task_stays_small() {
        let broker = crate::Broker::new(Default::default(), std::sync::Arc::new(NoHooks)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let fut = broker.serve_tcp_stream(server, peer);
        let size = size_of_val(&fut);
        eprintln!("connection future: {size} bytes; Connection: {} bytes", size_of::<super::Connection>());
        assert!(size < 2048 || cfg!(debug_assertions), "connection task grew to {size} bytes");
        drop(fut);
        drop(client);
    }

    struct NoHooks;
    #[async_trait::async_trait]
    impl crate::BrokerHooks for NoHooks {
        async fn authenticate(&self, _: &crate::ConnectRequest) -> Result<crate::Identity, crate::ConnectRefusal> {
            Err(crate::ConnectRefusal::NotAuthorized)
        }
        fn on_platform_publish(
            &self,
            _: &crate::Identity,
            _: &crate::InboundPublish,
        ) -> Result<crate::PlatformWrite, crate::PublishRefusal> {
            Ok(Box::pin(async { Ok(()) }))
        }
        fn device_tenant(&self, _: &str) -> Option<String> {
            None
        }
    }
}
