//! What the broker is handed rather than finds out for itself, on raw sockets: a device's tenant
//! that takes the platform time to look up (awaited in arrival order, never blocking the
//! connection), and the clock that sessions and wills expire by (moved by hand, not slept).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use corral_mqtt::codec::*;
use corral_mqtt::*;
use corral_services::{Clock, ManualClock};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const BOTH: [ProtocolVersion; 2] = [V3, V5];

/// How long the stand-in registry takes to name a device's tenant.
const LOOKUP: Duration = Duration::from_millis(200);

/// Like `PlatformDoor`: a cache answers at once, anything else is a slow lookup that fills it.
/// `d1` is acme's, `g1` globex's; other names are unknown.
#[derive(Default)]
struct SlowTenants {
    cache: Arc<Mutex<HashMap<String, String>>>,
    lookups: AtomicUsize,
    /// Client ids whose connection ended (told after their session went offline).
    gone: Mutex<Vec<String>>,
}

impl SlowTenants {
    fn gone(&self, client_id: &str) -> bool {
        self.gone.lock().unwrap().iter().any(|c| c == client_id)
    }
}

#[async_trait::async_trait]
impl BrokerHooks for SlowTenants {
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ConnectRefusal> {
        let user = req.username.as_deref().ok_or(ConnectRefusal::NotAuthorized)?;
        identity_for(user, req.password.as_deref().unwrap_or_default())
    }

    fn on_platform_publish(&self, _: &Identity, _: &InboundPublish) -> Result<PlatformWrite, PublishRefusal> {
        Ok(Box::pin(async { Ok(()) }))
    }

    fn device_tenant(&self, device: &str) -> Option<String> {
        self.cache.lock().unwrap().get(device).cloned()
    }

    fn resolve_device_tenant(&self, device: &str) -> TenantLookup {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let tenant = match device {
            "d1" => Some("acme".to_string()),
            "g1" => Some("globex".to_string()),
            _ => None,
        };
        let (cache, device) = (self.cache.clone(), device.to_string());
        Box::pin(async move {
            tokio::time::sleep(LOOKUP).await;
            if let Some(tenant) = &tenant {
                cache.lock().unwrap().insert(device, tenant.clone());
            }
            tenant
        })
    }

    fn on_disconnected(&self, _: &Identity, client_id: &str, _: DisconnectKind) {
        self.gone.lock().unwrap().push(client_id.to_string());
    }
}

struct Started {
    broker: Broker,
    addr: std::net::SocketAddr,
    hooks: Arc<SlowTenants>,
}

async fn start_with(clock: Arc<dyn Clock>) -> Started {
    let hooks = Arc::new(SlowTenants::default());
    let broker = Broker::with_clock(open_config(), hooks.clone(), clock).expect("broker starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let b = broker.clone();
    tokio::spawn(async move { b.serve_tcp(listener).await });
    Started { broker, addr, hooks }
}

fn publish_packet(topic: &str, qos: QoS, packet_id: u16) -> Packet {
    Packet::Publish(publish(topic, topic.as_bytes(), qos, packet_id, false))
}

/// Regression (issue 17): the first lookup of a device's tenant blocked the connection's runtime
/// thread (`block_in_place`, which panics outright on a current-thread runtime like this test's).
/// Now it waits in the connection's ordered stage: the client is still served meanwhile, and
/// publishes are routed and acknowledged in the order they arrived, as before.
#[tokio::test]
async fn a_tenant_lookup_waits_in_order_without_blocking_the_connection() {
    for version in BOTH {
        let t = start_with(Arc::new(ManualClock::default())).await;
        let mut watcher = Raw::ok(t.addr, V5, ConnectOpts::new("watcher").user("admin", "secret")).await;
        watcher.subscribe(1, "devices/+/commands/#", QoS::AtMostOnce).await;
        watcher.subscribe(2, "tenants/#", QoS::AtMostOnce).await;
        let mut app = Raw::ok(t.addr, version, ConnectOpts::new("acme-app").user("acme-app", "secret")).await;
        let started = Instant::now();
        // One burst: a command whose device's tenant is not at hand, then a ping.
        app.send(publish_packet("devices/d1/commands/a", QoS::AtLeastOnce, 1)).await;
        app.send(Packet::PingReq).await;
        assert_eq!(app.recv().await, Packet::PingResp, "served while the lookup runs");
        assert!(started.elapsed() < LOOKUP, "{:?}", started.elapsed());
        // More behind it: one needing no lookup, another tenant's device (refused), a QoS 0
        // command to a device not yet cached, and one more.
        app.send(publish_packet("tenants/acme/b", QoS::AtLeastOnce, 2)).await;
        app.send(publish_packet("devices/g1/commands/c", QoS::AtLeastOnce, 3)).await;
        app.send(publish_packet("devices/d1/commands/d", QoS::AtMostOnce, 0)).await;
        app.send(publish_packet("tenants/acme/e", QoS::AtLeastOnce, 4)).await;
        let refused = if version == V5 { ReasonCode::NOT_AUTHORIZED } else { ReasonCode::SUCCESS };
        let expected_acks = [(1, ReasonCode::SUCCESS), (2, ReasonCode::SUCCESS), (3, refused), (4, ReasonCode::SUCCESS)];
        for (packet_id, reason) in expected_acks {
            assert_eq!(app.recv().await, Packet::PubAck(PubAck::new(packet_id, reason)), "{version:?}");
        }
        for topic in ["devices/d1/commands/a", "tenants/acme/b", "devices/d1/commands/d", "tenants/acme/e"] {
            assert_eq!(&*watcher.recv_publish().await.topic, topic, "{version:?}");
        }
        watcher.expect_silence(Duration::from_millis(100)).await;
        // Looked up once each, and cached: the next command goes on at once.
        assert_eq!(t.hooks.lookups.load(Ordering::SeqCst), 3, "d1, g1, d1 again before the first answer");
        app.send(publish_packet("devices/d1/commands/f", QoS::AtLeastOnce, 5)).await;
        assert_eq!(app.recv().await, Packet::PubAck(PubAck::new(5, ReasonCode::SUCCESS)));
        assert_eq!(t.hooks.lookups.load(Ordering::SeqCst), 3);
    }
}

/// A publish still waiting for its device's tenant when the client hangs up is delivered, as it
/// was when the tenant was at hand (`mosquitto_pub` sends a command and disconnects at once).
#[tokio::test]
async fn a_command_sent_just_before_disconnecting_is_delivered() {
    for version in BOTH {
        let t = start_with(Arc::new(ManualClock::default())).await;
        let mut watcher = Raw::ok(t.addr, V5, ConnectOpts::new("watcher").user("admin", "secret")).await;
        watcher.subscribe(1, "devices/+/commands/#", QoS::AtMostOnce).await;
        let mut app = Raw::ok(t.addr, version, ConnectOpts::new("pub").user("admin", "secret")).await;
        app.send(publish_packet("devices/d1/commands/reboot", QoS::AtMostOnce, 0)).await;
        app.send(Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION))).await;
        app.expect_closed().await;
        assert_eq!(&*watcher.recv_publish().await.topic, "devices/d1/commands/reboot", "{version:?}");
    }
}

/// The tenant a command carries comes from the lookup: a tenant-scoped subscriber receives its
/// own tenant's commands only, whether an application or the platform sent them.
#[tokio::test]
async fn a_looked_up_tenant_scopes_who_receives_the_command() {
    let t = start_with(Arc::new(ManualClock::default())).await;
    let mut acme = Raw::ok(t.addr, V5, ConnectOpts::new("acme-app").user("acme-app", "secret")).await;
    acme.subscribe(1, "devices/+/commands/#", QoS::AtMostOnce).await;
    let mut admin = Raw::ok(t.addr, V5, ConnectOpts::new("admin").user("admin", "secret")).await;
    admin.send(publish_packet("devices/g1/commands/x", QoS::AtMostOnce, 0)).await;
    admin.send(publish_packet("devices/d1/commands/x", QoS::AtMostOnce, 0)).await;
    assert_eq!(&*acme.recv_publish().await.topic, "devices/d1/commands/x");
    for device in ["g1", "d1"] {
        let topic = format!("devices/{device}/commands/y");
        t.broker.publish_from_platform(&topic, Bytes::from_static(b"{}"), QoS::AtMostOnce, false).await.unwrap();
    }
    assert_eq!(&*acme.recv_publish().await.topic, "devices/d1/commands/y");
    acme.expect_silence(Duration::from_millis(300)).await;
}

fn will(topic: &str, delay_secs: u32) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties { will_delay_interval: Some(delay_secs), ..Properties::default() },
    }
}

/// Waits (briefly: the broker's housekeeping ticks every 100 ms and sweeps sessions every
/// second) until `done`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Will delays and session expiry are behaviour by date: they follow the broker's clock, so
/// ten minutes pass here in a moment, and nothing happens while the clock stands still.
#[tokio::test]
async fn wills_and_session_expiry_follow_the_injected_clock() {
    let clock = ManualClock::at(1_700_000_000_000_000_000);
    let t = start_with(Arc::new(clock.clone())).await;
    let mut watcher = Raw::ok(t.addr, V5, ConnectOpts::new("watcher")).await;
    watcher.subscribe(1, "will/#", QoS::AtMostOnce).await;

    // A will delayed ten minutes, of a session kept for an hour.
    let mut o = ConnectOpts::new("delayed").persistent(3600);
    o.will = Some(will("will/delayed", 600));
    drop(Raw::ok(t.addr, V5, o).await);
    until("the session to be offline", || t.hooks.gone("delayed")).await;
    clock.advance(Duration::from_secs(599));
    watcher.expect_silence(Duration::from_millis(300)).await;
    clock.advance(Duration::from_secs(1));
    assert_eq!(&*watcher.recv_publish().await.topic, "will/delayed");

    // A session kept for a minute, whose will waits longer than that: both end at the minute.
    let mut o = ConnectOpts::new("brief").persistent(60);
    o.will = Some(will("will/brief", 3600));
    drop(Raw::ok(t.addr, V5, o).await);
    // 3.1.1 persistent sessions never expire.
    drop(Raw::ok(t.addr, V3, ConnectOpts::new("old").persistent(0)).await);
    until("both to be offline", || t.hooks.gone("brief") && t.hooks.gone("old")).await;
    assert_eq!(t.broker.metrics().persistent_sessions, 3);
    clock.advance(Duration::from_secs(59));
    watcher.expect_silence(Duration::from_millis(1300)).await;
    assert_eq!(t.broker.metrics().persistent_sessions, 3, "a second short of its expiry");
    clock.advance(Duration::from_secs(1));
    assert_eq!(&*watcher.recv_publish().await.topic, "will/brief");
    until("the session to expire", || t.broker.metrics().persistent_sessions == 2).await;

    // A year on, the hour-long session is gone too; the 3.1.1 one is still there.
    clock.advance(Duration::from_secs(365 * 24 * 3600));
    until("the hour-long session to expire", || t.broker.metrics().persistent_sessions == 1).await;
    let (_, back) = Raw::connect(t.addr, V5, ConnectOpts::new("brief").persistent(60)).await;
    assert!(!back.session_present, "expired");
    let (_, back) = Raw::connect(t.addr, V3, ConnectOpts::new("old").persistent(0)).await;
    assert!(back.session_present, "3.1.1 sessions are kept");
}
