//! [`Broker`]: the handle the binary holds. Construction (recovering durable state), listeners,
//! platform-side operations (publish, taps and delivery receipts, what a session holds, kick),
//! housekeeping, shutdown and metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corral_services::{Clock, SystemClock};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

use crate::codec::{QoS, ReasonCode};
use crate::config::BrokerConfig;
use crate::connection::{self, Transport};
use crate::error::BrokerError;
use crate::hooks::{BrokerHooks, Identity};
use crate::message::{Message, now_ms};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::persist::{self, Persist, StateCapture};
use crate::receipts::{Acknowledged, Recipient};
use crate::retained::RetainedStore;
use crate::state::{BrokerState, read};
use crate::trie::SubscriptionTrie;
use crate::will::PendingWills;

/// The MQTT broker. Cheap to clone; all clones drive the same broker.
#[derive(Clone)]
pub struct Broker {
    state: Arc<BrokerState>,
}

impl Broker {
    /// Validates `config`, recovers persistent sessions and retained messages from
    /// `config.data_dir` and starts the housekeeping and state-writer tasks. Must run inside a
    /// Tokio runtime. Sessions and wills expire by the system's clock.
    pub fn new(config: BrokerConfig, hooks: Arc<dyn BrokerHooks>) -> Result<Broker, BrokerError> {
        Broker::with_clock(config, hooks, Arc::new(SystemClock))
    }

    /// [`Broker::new`] whose session expiry and will delays follow `clock`, so a test moves a
    /// [`ManualClock`](corral_services::ManualClock) past them instead of sleeping.
    ///
    /// Only those two read it: they are behaviour by date (how long an offline session is kept,
    /// when a will goes out), so setting the system's time moves them too. Keep-alive, the
    /// publish rate limit and the connect and write timeouts stay on tokio's monotonic time: they
    /// are protocol timers that pace one live connection, and a wall clock that jumps would
    /// break them.
    pub fn with_clock(config: BrokerConfig, hooks: Arc<dyn BrokerHooks>, clock: Arc<dyn Clock>) -> Result<Broker, BrokerError> {
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| BrokerError::NoRuntime)?;
        let opened = match &config.data_dir {
            Some(dir) => Some(persist::open(dir)?),
            None => None,
        };
        let snapshot_every = config.snapshot_every_ops;
        let (shutdown, _) = watch::channel(false);
        let mut recovered = None;
        let state = Arc::new_cyclic(|me: &Weak<BrokerState>| {
            let persist = opened.map(|opened| {
                let capture: Weak<dyn StateCapture> = me.clone();
                let (persist, rec) = Persist::start(opened, capture, snapshot_every);
                recovered = Some(rec);
                persist
            });
            BrokerState {
                config,
                hooks,
                clock,
                sessions: Mutex::new(HashMap::new()),
                trie: RwLock::new(SubscriptionTrie::default()),
                retained: RwLock::new(RetainedStore::default()),
                persist,
                metrics: Metrics::default(),
                wills: PendingWills::default(),
                next_msg_id: AtomicU64::new(1),
                next_generation: AtomicU64::new(1),
                shutdown,
                live_tasks: AtomicUsize::new(0),
                all_tasks_done: Notify::new(),
                me: me.clone(),
                taps: RwLock::default(),
                tenant_shares: Default::default(),
                receipts: Default::default(),
            }
        });
        if let Some(rec) = recovered {
            state.next_msg_id.store(rec.max_msg_id + 1, Ordering::Relaxed);
            {
                let mut retained = crate::state::write(&state.retained);
                for (_, message) in rec.retained {
                    retained.set(message);
                }
            }
            state.install_recovered(rec.sessions);
        }
        tokio::spawn(housekeeping(Arc::downgrade(&state)));
        if let Some(interval) = state.config.sys_interval {
            tokio::spawn(crate::sys::publish_every(Arc::downgrade(&state), interval));
        }
        Ok(Broker { state })
    }

    /// Accepts MQTT-over-TCP connections until [`Broker::shutdown`].
    pub async fn serve_tcp(&self, listener: TcpListener) -> std::io::Result<()> {
        let mut stop = self.state.shutdown.subscribe();
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let broker = self.clone();
                        tokio::spawn(async move { broker.serve_tcp_stream(stream, peer).await });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "MQTT accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// Serves one accepted TCP connection (the low-memory path: no read buffer while idle).
    pub async fn serve_tcp_stream(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        connection::run(self.state.clone(), Transport::tcp(stream), peer, "tcp", None).await;
    }

    /// Serves MQTT over any byte stream (WebSocket, TLS, ...) until it closes. `transport` is a
    /// label for logs and [`ConnectRequest::transport`](crate::ConnectRequest).
    pub async fn serve_connection<S>(&self, stream: S, peer: SocketAddr, transport: &'static str)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        connection::run(self.state.clone(), Transport::stream(stream), peer, transport, None).await;
    }

    /// Serves MQTT over TLS whose client presented `certificate` (DER, verified by the TLS
    /// layer): the hooks see it in [`ConnectRequest::certificate`](crate::ConnectRequest).
    pub async fn serve_tls_connection<S>(&self, stream: S, peer: SocketAddr, certificate: Option<Vec<u8>>)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        connection::run(self.state.clone(), Transport::stream(stream), peer, "tls", certificate).await;
    }

    /// Publishes a message as the platform (alarms, commands). Messages on `devices/<id>/...`
    /// carry that device's tenant. Resolves once routed (and durable where that applies).
    pub async fn publish_from_platform(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), BrokerError> {
        self.publish_for_tenant(topic, payload, qos, retain, None).await
    }

    /// Like [`Broker::publish_from_platform`], on behalf of `tenant` when the topic names no
    /// device (`alarms/<tenant>/...`): tenant-scoped subscribers receive only their tenant's
    /// messages, and a message without a tenant only reaches unscoped ones.
    pub async fn publish_for_tenant(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
        tenant: Option<&str>,
    ) -> Result<(), BrokerError> {
        self.publish_with(topic, payload.into(), qos, retain, tenant, None, None).await
    }

    /// Answers an MQTT 5 request the platform took from a tap: `payload` on `topic` (QoS 1), with
    /// the request's correlation data, so the requester can match it to its question.
    pub async fn publish_answer(&self, topic: &str, payload: Bytes, correlation_data: Option<Bytes>) -> Result<(), BrokerError> {
        let props = correlation_data
            .map(|data| Box::new(crate::codec::Properties { correlation_data: Some(data), ..Default::default() }));
        self.publish_with(topic, payload, QoS::AtLeastOnce, false, None, props, None).await
    }

    /// Like [`Broker::publish_for_tenant`], with MQTT 5 properties (a 3.1.1 subscriber gets the
    /// message without them); returns the sessions that queued a copy, online or not.
    pub async fn publish_with_properties(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        tenant: Option<&str>,
        properties: PublishProperties,
    ) -> Result<Vec<Recipient>, BrokerError> {
        let mut recipients = Vec::new();
        let props = properties.into_codec();
        self.publish_with(topic, payload.into(), qos, false, tenant, props, Some(&mut recipients)).await?;
        Ok(recipients)
    }

    /// Every delivery of a message on a topic matching `filter` that a client took from now on
    /// (see [`Acknowledged`]); the listener must keep up (at most `capacity` wait, later ones
    /// are lost with a warning). Ends when the receiver is dropped.
    pub fn acknowledgements(&self, filter: &str, capacity: usize) -> Result<mpsc::Receiver<Acknowledged>, BrokerError> {
        if !crate::topic::is_valid_filter(filter) || crate::topic::parse_shared(filter).is_some() {
            return Err(BrokerError::InvalidTopic(filter.to_owned()));
        }
        Ok(self.state.receipts.listen(filter, capacity))
    }

    /// Whether the session of `client_id` holds a message on `topic` that its client has not
    /// acknowledged yet: queued for it (online or not) or in flight. Such a message reaches the
    /// client without being published again (after a restart too, for a persistent session).
    pub fn session_holds(&self, client_id: &str, topic: &str) -> bool {
        let Some(session) = self.state.sessions().get(client_id).cloned() else { return false };
        let st = session.lock();
        st.queue.iter().any(|out| &*out.message.topic == topic)
            || st.inflight.values().any(|inflight| &*inflight.out.message.topic == topic)
    }

    /// The sessions whose subscriptions match `topic` (every member of a shared group), online
    /// or not: who would get a message published there.
    pub fn subscribers(&self, topic: &str) -> Vec<Recipient> {
        let sessions = read(&self.state.trie).sessions_matching(topic);
        sessions.iter().map(|session| Recipient::of(session)).collect()
    }

    /// The retained messages on topics matching `filter`, as (topic, payload).
    pub fn retained(&self, filter: &str) -> Vec<(Arc<str>, Bytes)> {
        read(&self.state.retained).matching(filter).iter().map(|m| (m.topic.clone(), m.payload.clone())).collect()
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish_with(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        tenant: Option<&str>,
        mut props: Option<Box<crate::codec::Properties>>,
        recipients: Option<&mut Vec<Recipient>>,
    ) -> Result<(), BrokerError> {
        if self.state.is_shutting_down() {
            return Err(BrokerError::ShuttingDown);
        }
        if !crate::topic::is_valid_topic_name(topic) {
            return Err(BrokerError::InvalidTopic(topic.to_owned()));
        }
        let device_tenant = match crate::topic::device_of(topic) {
            Some(device) => crate::hooks::device_tenant(&*self.state.hooks, device).await,
            None => None,
        };
        let origin_tenant = device_tenant.or_else(|| tenant.map(str::to_owned)).map(Arc::from);
        // The expiry is kept as a time, and announced to each subscriber as what is left of it.
        let expiry_secs = props.as_mut().and_then(|p| p.message_expiry_interval.take());
        let expires_at_ms = expiry_secs.map(|s| now_ms() + u64::from(s) * 1000);
        let props = props.filter(|p| !p.is_empty());
        let message = Arc::new(Message {
            id: self.state.new_message_id(),
            topic: Arc::from(topic),
            payload,
            qos,
            retain,
            props,
            expires_at_ms,
            origin_client: None,
            origin_tenant,
        });
        if self.state.route_to(message, recipients)
            && let Some(p) = &self.state.persist
            && !p.barrier().await.unwrap_or(false)
        {
            return Err(BrokerError::State { path: "mqtt state log".into(), message: "write failed".into() });
        }
        Ok(())
    }

    /// Every message routed on a topic matching `filter` from now on, for an in-process
    /// listener; the listener must keep up (at most `capacity` wait, later ones are lost with a
    /// warning). Ends when the receiver is dropped.
    pub fn tap(&self, filter: &str, capacity: usize) -> Result<mpsc::Receiver<crate::Tapped>, BrokerError> {
        if !crate::topic::is_valid_filter(filter) {
            return Err(BrokerError::InvalidTopic(filter.to_owned()));
        }
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let mut taps = crate::state::write(&self.state.taps);
        taps.retain(|t| !t.sender.is_closed());
        taps.push(crate::tap::Tap { filter: filter.to_owned(), sender });
        Ok(receiver)
    }

    /// Disconnects every client whose identity matches (v5: DISCONNECT with `reason`, e.g.
    /// 0x98 administrative action). Returns how many were asked to leave.
    pub fn disconnect_client_where(&self, reason: ReasonCode, pred: impl Fn(&Identity) -> bool) -> usize {
        self.state.kick_where(reason, &pred)
    }

    /// Disconnects the device `device_id` (quarantined, decommissioned, token rotated).
    pub fn kick_device(&self, device_id: &str, reason: ReasonCode) -> usize {
        self.disconnect_client_where(reason, |who| matches!(who, Identity::Device { id, .. } if id == device_id))
    }

    /// Stops listeners, disconnects every client (v5: 0x8B server shutting down), waits up to
    /// `grace` for connection tasks, then flushes and snapshots durable state.
    pub async fn shutdown(&self, grace: Duration) {
        let state = &self.state;
        state.shutdown.send_replace(true);
        let deadline = Instant::now() + grace;
        while state.live_tasks.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            let notified = state.all_tasks_done.notified();
            if state.live_tasks.load(Ordering::Acquire) == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
        if let Some(p) = &state.persist {
            p.shutdown().await;
        }
        tracing::info!("MQTT broker stopped");
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.state.metrics_snapshot()
    }
}

/// MQTT 5 properties of a platform publish ([`Broker::publish_with_properties`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Where the platform wants the answer (request/response).
    pub response_topic: Option<String>,
    /// Handed back with the answer, so the platform can match it to its question.
    pub correlation_data: Option<Bytes>,
    pub content_type: Option<String>,
    /// The message is dropped, wherever it waits, once this many seconds passed.
    pub message_expiry_secs: Option<u32>,
}

impl PublishProperties {
    fn into_codec(self) -> Option<Box<crate::codec::Properties>> {
        let properties = crate::codec::Properties {
            response_topic: self.response_topic,
            correlation_data: self.correlation_data,
            content_type: self.content_type,
            message_expiry_interval: self.message_expiry_secs,
            ..Default::default()
        };
        (!properties.is_empty()).then(|| Box::new(properties))
    }
}

/// Fires due wills (every 100 ms) and expires sessions (every second) until the broker is gone.
/// The tick is tokio time; what is due is decided by the broker's clock (see [`Broker::with_clock`]).
async fn housekeeping(state: Weak<BrokerState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        for will in state.wills.take_due(state.clock.now_ns()) {
            state.publish_will(will.message, &will.identity);
        }
        ticks += 1;
        if ticks.is_multiple_of(10) {
            state.expire_sessions();
        }
    }
}
