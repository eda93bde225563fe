//! Shared test fixtures: a hooks implementation with an identity table and a recording platform
//! hook, a broker on 127.0.0.1:0, and a raw-socket MQTT client built on the crate's codec.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corral_mqtt::codec::*;
use corral_mqtt::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(5);

/// Identity table: user name → (password, identity).
pub fn identity_for(username: &str, password: &[u8]) -> Result<Identity, ConnectRefusal> {
    let device = |id: &str, tenant: &str, children: &[&str]| Identity::Device {
        id: id.into(),
        tenant: tenant.into(),
        children: children.iter().map(|c| c.to_string()).collect(),
    };
    let app = |name: &str, role, tenant: Option<&str>| Identity::Application {
        name: name.into(),
        principal: name.into(),
        role,
        tenant: tenant.map(Into::into),
    };
    let (want, identity) = match username {
        "dev1" => ("pw1", device("dev1", "acme", &["child1"])),
        "dev2" => ("pw2", device("dev2", "beta", &[])),
        "admin" => ("secret", app("admin", Role::Admin, None)),
        "viewer" => ("secret", app("viewer", Role::Viewer, None)),
        "acme-app" => ("secret", app("acme-app", Role::Operator, Some("acme"))),
        "banned" => return Err(ConnectRefusal::NotAuthorized),
        _ => return Err(ConnectRefusal::BadCredentials),
    };
    if password != want.as_bytes() {
        return Err(ConnectRefusal::BadCredentials);
    }
    Ok(identity)
}

/// Records platform publishes. `fail_with` makes the next ones fail to decode with that reason
/// code; `write_fails_with` makes their writes fail; `write_ms` is how long a write takes (the
/// stand-in for the WAL fsync; 0 means 2 ms).
#[derive(Default)]
pub struct TestHooks {
    pub platform: Arc<Mutex<Vec<(String, Bytes)>>>,
    pub fail_with: AtomicU8,
    pub write_fails_with: AtomicU8,
    pub write_ms: AtomicU64,
    pub events: Mutex<Vec<String>>,
}

impl TestHooks {
    pub fn platform_topics(&self) -> Vec<String> {
        self.platform.lock().unwrap().iter().map(|(t, _)| t.clone()).collect()
    }
}

#[async_trait::async_trait]
impl BrokerHooks for TestHooks {
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ConnectRefusal> {
        let Some(user) = &req.username else {
            return Err(ConnectRefusal::NotAuthorized);
        };
        identity_for(user, req.password.as_deref().unwrap_or_default())
    }

    fn on_platform_publish(&self, _who: &Identity, p: &InboundPublish) -> Result<PlatformWrite, PublishRefusal> {
        match self.fail_with.load(Ordering::SeqCst) {
            0 => {
                let platform = self.platform.clone();
                let entry = (p.topic.to_string(), p.payload.clone());
                let fails = self.write_fails_with.load(Ordering::SeqCst);
                let ms = match self.write_ms.load(Ordering::SeqCst) {
                    0 => 2,
                    ms => ms,
                };
                Ok(Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if fails != 0 {
                        return Err(PublishRefusal::new(ReasonCode(fails), "write told to fail"));
                    }
                    platform.lock().unwrap().push(entry);
                    Ok(())
                }))
            }
            // Stands in for a payload that does not decode.
            code => Err(PublishRefusal::new(ReasonCode(code), "told to fail")),
        }
    }

    fn device_tenant(&self, device: &str) -> Option<String> {
        match device {
            "dev1" | "child1" => Some("acme".into()),
            "dev2" => Some("beta".into()),
            _ => None,
        }
    }

    fn on_connected(&self, _who: &Identity, client_id: &str) {
        self.events.lock().unwrap().push(format!("connected {client_id}"));
    }

    fn on_disconnected(&self, _who: &Identity, client_id: &str, how: DisconnectKind) {
        self.events.lock().unwrap().push(format!("disconnected {client_id} {how:?}"));
    }

    fn on_subscribed(&self, _who: &Identity, client_id: &str, filters: &[String], resumed: bool) {
        let how = if resumed { "resumed" } else { "subscribed" };
        self.events.lock().unwrap().push(format!("{how} {client_id} {}", filters.join(" ")));
    }
}

pub struct TestBroker {
    pub broker: Broker,
    pub addr: SocketAddr,
    pub hooks: Arc<TestHooks>,
}

pub async fn start(config: BrokerConfig) -> TestBroker {
    let _ = tracing_subscriber::fmt().with_env_filter("corral_mqtt=debug").with_test_writer().try_init();
    let hooks = Arc::new(TestHooks::default());
    let broker = Broker::new(config, hooks.clone()).expect("broker starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let b = broker.clone();
    tokio::spawn(async move { b.serve_tcp(listener).await });
    TestBroker { broker, addr, hooks }
}

pub fn open_config() -> BrokerConfig {
    // No $SYS tree: its retained messages would count in the gauges these tests check.
    BrokerConfig { allow_anonymous: true, sys_interval: None, ..BrokerConfig::default() }
}

/// A hand-driven MQTT client on a raw socket.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

pub struct ConnectOpts<'a> {
    pub client_id: &'a str,
    pub clean_start: bool,
    pub keep_alive_secs: u16,
    pub user: Option<(&'a str, &'a str)>,
    pub properties: Properties,
    pub will: Option<LastWill>,
}

impl<'a> ConnectOpts<'a> {
    pub fn new(client_id: &'a str) -> Self {
        ConnectOpts {
            client_id,
            clean_start: true,
            keep_alive_secs: 60,
            user: None,
            properties: Properties::default(),
            will: None,
        }
    }
    pub fn user(mut self, name: &'a str, password: &'a str) -> Self {
        self.user = Some((name, password));
        self
    }
    pub fn persistent(mut self, expiry_secs: u32) -> Self {
        self.clean_start = false;
        self.properties.session_expiry_interval = Some(expiry_secs);
        self
    }
}

impl Raw {
    pub async fn tcp(addr: SocketAddr, version: ProtocolVersion) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        Raw { stream, buf: BytesMut::new(), version }
    }

    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, opts: ConnectOpts<'_>) -> (Raw, ConnAck) {
        let mut raw = Raw::tcp(addr, version).await;
        let connack = raw.handshake(opts).await;
        (raw, connack)
    }

    /// Connects and asserts success.
    pub async fn ok(addr: SocketAddr, version: ProtocolVersion, opts: ConnectOpts<'_>) -> Raw {
        let (raw, connack) = Raw::connect(addr, version, opts).await;
        assert_eq!(connack.reason, ReasonCode::SUCCESS, "{connack:?}");
        raw
    }

    pub async fn handshake(&mut self, opts: ConnectOpts<'_>) -> ConnAck {
        let connect = Connect {
            version: self.version,
            client_id: opts.client_id.into(),
            clean_start: opts.clean_start,
            keep_alive_secs: opts.keep_alive_secs,
            properties: if self.version == ProtocolVersion::V5 { opts.properties } else { Properties::default() },
            will: opts.will,
            username: opts.user.map(|(u, _)| u.to_owned()),
            password: opts.user.map(|(_, p)| Bytes::copy_from_slice(p.as_bytes())),
        };
        self.send(Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Packet::ConnAck(c) => c,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode_packet(&packet, self.version, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Next packet, or `None` if the server closed the connection or `wait` passed.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(p) = decode_packet(&mut self.buf, self.version, usize::MAX).expect("server sent garbage") {
                return Some(p);
            }
            self.buf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    pub async fn recv(&mut self) -> Packet {
        self.recv_within(WAIT).await.expect("packet from server")
    }

    /// Asserts the server closes the connection (after optionally sending packets first).
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        loop {
            match self.recv_within(WAIT).await {
                Some(p) => got.push(p),
                None => return got,
            }
        }
    }

    pub async fn subscribe(&mut self, packet_id: u16, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_with(packet_id, filter, SubscriptionOptions { qos, ..Default::default() }, None).await
    }

    pub async fn subscribe_with(
        &mut self,
        packet_id: u16,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> SubAck {
        let properties = Properties { subscription_identifiers: id.into_iter().collect(), ..Properties::default() };
        self.send(Packet::Subscribe(Subscribe { packet_id, properties, filters: vec![(filter.into(), options)] })).await;
        loop {
            match self.recv().await {
                Packet::SubAck(s) => return s,
                Packet::Publish(_) => continue, // retained may race; callers re-check
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, packet_id: u16, retain: bool) {
        self.send(Packet::Publish(publish(topic, payload, qos, packet_id, retain))).await;
    }

    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts nothing arrives for a while.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(p) = self.recv_within(wait).await {
            panic!("expected nothing, got {p:?}");
        }
    }
}

pub fn publish(topic: &str, payload: &[u8], qos: QoS, packet_id: u16, retain: bool) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: Arc::from(topic),
        packet_id,
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

pub fn ack(packet_id: u16) -> PubAck {
    PubAck::new(packet_id, ReasonCode::SUCCESS)
}
