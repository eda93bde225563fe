//! Publishing to NATS with the core text protocol, written by hand: Corral only ever publishes,
//! and async-nats would cost more build time than this whole module is worth on a small machine.
//! Protocol: <https://docs.nats.io/reference/reference-protocols/nats-protocol>.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::AttemptError;

const DEFAULT_PORT: u16 = 4222;
/// Longest protocol line we accept (INFO is the long one, a few hundred bytes in practice).
const MAX_LINE_BYTES: u64 = 64 * 1024;

/// Publishes to NATS servers. Cloning shares the connections.
#[derive(Clone)]
pub struct NatsPublisher {
    shared: Arc<Shared>,
}

struct Shared {
    timeout: Duration,
    /// One slot per server URL, as written in actions (so a handful). A slot is empty until the
    /// first publish and again after any error, so the next publish reconnects. Its tokio mutex
    /// serializes publishes on that connection: one waits for its PONG before the next is sent,
    /// which keeps "which PONG is mine" trivial; throughput is not the goal.
    connections: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
}

impl NatsPublisher {
    /// `timeout` bounds each publish, connecting included.
    pub fn new(timeout: Duration) -> Self {
        let shared = Shared { timeout, connections: Mutex::new(HashMap::new()) };
        NatsPublisher { shared: Arc::new(shared) }
    }

    /// Publishes and waits until the server has processed it (a PING after the HPUB, resolved by its PONG),
    /// so success means the NATS server accepted the message. `msg_id` goes in the `Nats-Msg-Id` header,
    /// which JetStream uses to drop duplicates of a redelivered message.
    pub async fn publish(&self, url: &str, subject: &str, msg_id: &str, payload: &[u8]) -> Result<(), AttemptError> {
        check_subject(subject)?;
        if msg_id.contains(['\r', '\n']) {
            return Err(AttemptError::permanent("NATS message id must not contain a line break"));
        }
        let server = Server::parse(url)?;
        let slot = {
            let mut connections = self.shared.connections.lock().expect("NATS connection map");
            connections.entry(url.to_string()).or_default().clone()
        };
        let mut connection = slot.lock().await;
        let timeout = self.shared.timeout;
        let message = Message { subject, msg_id, payload };
        let result = tokio::time::timeout(timeout, publish_on(&mut connection, &server, &message))
            .await
            .unwrap_or_else(|_| Err(AttemptError::retry(format!("timed out after {timeout:?}"))));
        result.map_err(|e| {
            *connection = None;
            AttemptError { message: format!("NATS publish to {server} ({subject}): {}", e.message), ..e }
        })
    }
}

struct Message<'a> {
    subject: &'a str,
    msg_id: &'a str,
    payload: &'a [u8],
}

/// Publishes on the slot's connection, opening one if needed. A reused connection may have been
/// closed by the server since (restart, idle cut-off); one fresh try keeps that from costing the
/// action an attempt. A duplicate is possible if the first copy did get through, which the
/// outbox's at-least-once contract (and JetStream's `Nats-Msg-Id` dedup) already covers.
async fn publish_on(slot: &mut Option<Connection>, server: &Server, message: &Message<'_>) -> Result<(), AttemptError> {
    if let Some(connection) = slot {
        match connection.publish(message).await {
            Err(e) if e.retryable => {
                tracing::debug!(%server, "NATS connection went stale ({e}); reconnecting");
            }
            done => return done,
        }
    }
    *slot = None;
    let connection = slot.insert(Connection::open(server).await?);
    connection.publish(message).await
}

/// One TCP connection to a NATS server, past the CONNECT handshake. Dropped on any error.
struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Whether the server understands HPUB (NATS 2.2+); without it the message id is not sent.
    headers: bool,
    max_payload: Option<usize>,
}

/// The part of the server's INFO we use.
#[derive(serde::Deserialize)]
struct Info {
    #[serde(default)]
    headers: bool,
    #[serde(default)]
    tls_required: bool,
    max_payload: Option<usize>,
}

impl Connection {
    async fn open(server: &Server) -> Result<Connection, AttemptError> {
        let stream = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(|e| AttemptError::retry(format!("cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let mut connection = Connection { reader: BufReader::new(reader), writer, headers: false, max_payload: None };
        let line = connection.read_line().await?;
        let info: Info = line
            .strip_prefix("INFO ")
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| AttemptError::retry(format!("expected INFO from the server, got {line:?}")))?;
        if info.tls_required {
            return Err(AttemptError::permanent(
                "the server requires TLS, which Corral's NATS publisher does not speak; \
                 use a listener without TLS (for example on a private network)",
            ));
        }
        connection.headers = info.headers;
        connection.max_payload = info.max_payload;
        let connect = connect_options(server, info.headers);
        connection.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes()).await?;
        connection.await_pong().await?;
        Ok(connection)
    }

    async fn publish(&mut self, message: &Message<'_>) -> Result<(), AttemptError> {
        let Message { subject, msg_id, payload } = *message;
        let headers = match self.headers {
            true => format!("NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n"),
            false => String::new(),
        };
        let total = headers.len() + payload.len();
        if let Some(max) = self.max_payload.filter(|max| total > *max) {
            return Err(AttemptError::permanent(format!("message is {total} bytes, over the server's max_payload of {max}")));
        }
        let mut frame = Vec::with_capacity(total + subject.len() + 40);
        if self.headers {
            frame.extend(format!("HPUB {subject} {} {total}\r\n{headers}", headers.len()).bytes());
        } else {
            frame.extend(format!("PUB {subject} {total}\r\n").bytes());
        }
        frame.extend_from_slice(payload);
        // The PING after the message is answered only once the server has processed it.
        frame.extend_from_slice(b"\r\nPING\r\n");
        self.send(&frame).await?;
        self.await_pong().await
    }

    /// Reads until the PONG for our PING, answering the server's own PINGs on the way (it
    /// closes connections that leave them unanswered).
    async fn await_pong(&mut self) -> Result<(), AttemptError> {
        loop {
            let line = self.read_line().await?;
            match line.as_str() {
                "PONG" => return Ok(()),
                "PING" => self.send(b"PONG\r\n").await?,
                // +OK only comes in verbose mode; INFO updates announce cluster changes.
                "+OK" => {}
                _ if line.starts_with("INFO ") => {}
                _ if line.starts_with("-ERR") => return Err(server_error(&line)),
                _ => return Err(AttemptError::retry(format!("unexpected from server: {line:?}"))),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), AttemptError> {
        self.writer.write_all(bytes).await.map_err(|e| AttemptError::retry(format!("write failed: {e}")))
    }

    async fn read_line(&mut self) -> Result<String, AttemptError> {
        let mut line = Vec::new();
        let mut limited = (&mut self.reader).take(MAX_LINE_BYTES);
        limited.read_until(b'\n', &mut line).await.map_err(|e| AttemptError::retry(format!("read failed: {e}")))?;
        if !line.ends_with(b"\n") {
            let why = if line.is_empty() { "the server closed the connection" } else { "line too long" };
            return Err(AttemptError::retry(why));
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    }
}

fn connect_options(server: &Server, headers: bool) -> serde_json::Value {
    let mut options = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "headers": headers,
        // Protocol 1: the server may send INFO updates, which await_pong skips.
        "protocol": 1,
        "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
        "name": "corral",
    });
    // `user:pass@` is a user, `token@` alone an auth token, as in the official clients.
    match (&server.user, &server.pass) {
        (Some(user), Some(pass)) => {
            options["user"] = user.as_str().into();
            options["pass"] = pass.as_str().into();
        }
        (Some(token), None) => options["auth_token"] = token.as_str().into(),
        _ => {}
    }
    options
}

/// Credentials are a configuration error no retry will fix; anything else (slow consumer,
/// authentication timeout, a server shutting down) may pass.
fn server_error(line: &str) -> AttemptError {
    let text = line.trim_start_matches("-ERR").trim().trim_matches('\'');
    if text.eq_ignore_ascii_case("Authorization Violation") {
        AttemptError::permanent(format!(
            "server refused the credentials ({text}); put them in the URL as nats://user:pass@host:port"
        ))
    } else {
        AttemptError::retry(format!("server error: {text}"))
    }
}

/// Publish subjects are dot-separated tokens with no whitespace and no wildcards.
fn check_subject(subject: &str) -> Result<(), AttemptError> {
    let bad = subject.is_empty()
        || subject.contains(|c: char| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
        || subject.split('.').any(str::is_empty);
    if bad {
        return Err(AttemptError::permanent(format!(
            "NATS subject {subject:?} is invalid: use dot-separated tokens without spaces \
             or wildcards (* >), e.g. corral.alarms.raised"
        )));
    }
    Ok(())
}

/// Where to connect, from `nats://[user:pass@]host[:port]` or `host[:port]`.
struct Server {
    host: String,
    port: u16,
    user: Option<String>,
    pass: Option<String>,
}

impl Server {
    fn parse(url: &str) -> Result<Server, AttemptError> {
        // Never echo credentials into an error that ends up in the dead-letter table.
        let shown = match url.rsplit_once('@') {
            Some((_, host)) => format!("<credentials>@{host}"),
            None => url.to_string(),
        };
        let bad = |why: &str| {
            AttemptError::permanent(format!("NATS URL {shown:?} is invalid: {why}; expected nats://[user:pass@]host[:port]"))
        };
        let rest = match url.trim().split_once("://") {
            Some(("nats", rest)) => rest,
            Some((scheme, _)) => return Err(bad(&format!("scheme {scheme:?} is not supported"))),
            None => url.trim(),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (auth, host_port) = match rest.rsplit_once('@') {
            Some((auth, host_port)) => (Some(auth), host_port),
            None => (None, rest),
        };
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => v6.split_once(']').ok_or_else(|| bad("unclosed ["))?,
            None => host_port.rsplit_once(':').map_or((host_port, ""), |(h, p)| (h, p)),
        };
        let port = port.strip_prefix(':').unwrap_or(port);
        let port = match port {
            "" => DEFAULT_PORT,
            p => p.parse().map_err(|_| bad(&format!("port {p:?} is not a number")))?,
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/?#@".contains(c)) {
            return Err(bad("no valid host"));
        }
        if host.contains(':') && !host_port.starts_with('[') {
            return Err(bad("write an IPv6 address in brackets, e.g. [::1]:4222"));
        }
        let (user, pass) = match auth.map(|a| a.split_once(':').map_or((a, None), |(u, p)| (u, Some(p)))) {
            Some((user, pass)) => (Some(user.to_string()), pass.map(str::to_string)),
            None => (None, None),
        };
        Ok(Server { host: host.to_string(), port, user, pass })
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests;
