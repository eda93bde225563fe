//! The UDP socket and the message layer around the resources: parse, drop duplicates, answer
//! piggybacked or separately, and push commands and desired twin documents to observers. With
//! DTLS (`coaps`), datagrams pass through the peer's session first ([`crate::dtls`]).

use crate::blockwise::Blockwise;
use crate::commands::{Command, Commands};
use crate::config::CoapConfig;
use crate::dtls::{Dtls, DtlsConfig};
use crate::error::CoapError;
use crate::exchange::{Delivery, Exchanges, Seen};
use crate::message::{Code, Kind, Message, option};
use crate::metrics::{Gauges, Metrics};
use crate::request::{self, Response, Then};
use crate::transport::Transport;
use crate::twins::{self, DesiredObservers};
use corral_ingest::Sink;
use corral_ingest::decode::Limits;
use corral_services::{ArtifactDownloads, Carried, CommandProgress, Commands as CommandService, DeviceTwins, Identity};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};

/// Everything the receive loop and the request tasks share. Lives as long as the server.
pub(crate) struct Shared {
    pub config: CoapConfig,
    pub identity: Arc<dyn Identity>,
    /// The platform's commands: heard for CoAP devices, answered through it.
    pub command_service: Arc<dyn CommandService>,
    pub sink: Arc<dyn Sink>,
    pub limits: Limits,
    pub exchanges: Exchanges,
    pub blockwise: Blockwise,
    pub commands: Commands,
    /// The platform's device twins: reported patches go in, desired documents come out.
    pub twin_service: Arc<dyn DeviceTwins>,
    /// Devices observing their desired document.
    pub desired: DesiredObservers,
    /// Firmware artifacts, read a block at a time (`None`: not served).
    pub artifacts: Option<Arc<dyn ArtifactDownloads>>,
    pub metrics: Arc<Metrics>,
    pub transport: Arc<Transport>,
    in_flight: Arc<Semaphore>,
    socket: Arc<UdpSocket>,
    /// The DTLS sessions, on a `coaps` server.
    dtls: Option<Arc<Dtls>>,
}

/// What the CoAP door uses of the platform: services only.
#[derive(Clone)]
pub struct Services {
    /// Who a token or a DTLS session is, and whom it may speak for.
    pub identity: Arc<dyn Identity>,
    /// Commands for devices, whatever their door; a device's answers go back through it.
    pub commands: Arc<dyn CommandService>,
    /// Where decoded telemetry goes (durable when it returns).
    pub sink: Arc<dyn Sink>,
    /// Device twins: reported patches (durable when `report` returns) and desired documents.
    pub twins: Arc<dyn DeviceTwins>,
    /// Firmware artifacts devices download block-wise; `None`: `devices/<id>/artifacts/...` is 4.04.
    pub artifacts: Option<Arc<dyn ArtifactDownloads>>,
}

/// A CoAP server on one UDP socket. Cheap to clone.
#[derive(Clone)]
pub struct CoapServer {
    shared: Arc<Shared>,
}

/// The largest datagram read: anything longer is cut by the kernel and then fails to parse.
const MAX_DATAGRAM: usize = 65_535;

impl CoapServer {
    /// A plain CoAP server (`coap://`, devices authenticate with `?t=<token>`).
    pub async fn bind(addr: SocketAddr, config: CoapConfig, services: Services, limits: Limits) -> Result<CoapServer, CoapError> {
        CoapServer::start(addr, config, None, services, limits).await
    }

    /// A CoAP over DTLS server (`coaps://`): devices open a session with their pre-shared key
    /// (`Identity::psk`) and need no token.
    pub async fn bind_dtls(
        addr: SocketAddr,
        config: CoapConfig,
        dtls: DtlsConfig,
        services: Services,
        limits: Limits,
    ) -> Result<CoapServer, CoapError> {
        CoapServer::start(addr, config, Some(dtls), services, limits).await
    }

    async fn start(
        addr: SocketAddr,
        config: CoapConfig,
        dtls: Option<DtlsConfig>,
        services: Services,
        limits: Limits,
    ) -> Result<CoapServer, CoapError> {
        config.validate().map_err(CoapError::Config)?;
        let socket = Arc::new(UdpSocket::bind(addr).await.map_err(|source| CoapError::Bind { addr, source })?);
        let dtls = match dtls {
            Some(c) => Some(Arc::new(
                Dtls::new(socket.clone(), services.identity.clone(), c).map_err(|e| CoapError::Config(format!("DTLS: {e}")))?,
            )),
            None => None,
        };
        let transport = Arc::new(match &dtls {
            Some(dtls) => Transport::Dtls(dtls.clone()),
            None => Transport::Plain(socket.clone()),
        });
        let metrics = Arc::new(Metrics::new(if dtls.is_some() { "coaps" } else { "coap" }));
        let shared = Shared {
            exchanges: Exchanges::new(transport.clone(), config.clone(), metrics.clone()),
            blockwise: Blockwise::new(
                config.max_body_bytes,
                config.block_bytes,
                config.max_uploads,
                config.max_uploads_per_device,
                config.upload_idle,
            ),
            commands: Commands::new(config.max_pending_commands, config.max_observers, config.command_ttl, metrics.clone()),
            twin_service: services.twins.clone(),
            desired: DesiredObservers::new(config.max_observers),
            artifacts: services.artifacts.clone(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            identity: services.identity.clone(),
            command_service: services.commands.clone(),
            sink: services.sink,
            limits,
            metrics,
            transport,
            socket,
            dtls,
        };
        let server = CoapServer { shared: Arc::new(shared) };
        // Subscribed before bind returns: no command sent or desired change made after it is missed.
        tokio::spawn(hear_commands(Arc::downgrade(&server.shared), services.commands.subscribe()));
        tokio::spawn(twins::hear_desired_changes(Arc::downgrade(&server.shared), services.twins.desired_changes()));
        tokio::spawn(forget_on_credential_changes(Arc::downgrade(&server.shared), services.identity.credential_changes()));
        Ok(server)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.socket.local_addr()
    }

    /// Serves datagrams until `shutdown` turns true. Requests in progress finish on their own.
    pub async fn serve(&self, mut shutdown: watch::Receiver<bool>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut sweep = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            let received = tokio::select! {
                r = self.shared.socket.recv_from(&mut buf) => r,
                _ = sweep.tick(), if self.shared.dtls.is_some() => {
                    self.shared.dtls.iter().for_each(|d| d.sweep());
                    continue;
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match (received, &self.shared.dtls) {
                (Ok((n, peer)), None) => self.datagram(peer, &buf[..n]).await,
                (Ok((n, peer)), Some(dtls)) => {
                    for message in dtls.open(peer, &buf[..n]).await {
                        self.datagram(peer, &message).await;
                    }
                }
                // On Linux an ICMP "port unreachable" for an earlier send surfaces here.
                (Err(e), _) => tracing::debug!(error = %e, "coap receive failed"),
            }
        }
    }

    /// Waits (at most `grace`) for the requests in progress to be answered: call after
    /// [`CoapServer::serve`] stopped and before the store closes.
    pub async fn drain(&self, grace: std::time::Duration) {
        let all = self.shared.config.max_in_flight as u32;
        let _ = tokio::time::timeout(grace, self.shared.in_flight.acquire_many(all)).await;
    }

    pub fn render_metrics(&self, out: &mut String) {
        let gauges = Gauges {
            uploads: self.shared.blockwise.uploads_in_progress(),
            command_observers: self.shared.commands.observing(),
            desired_observers: self.shared.desired.len(),
        };
        self.shared.metrics.render(out, gauges);
        if let Some(dtls) = &self.shared.dtls {
            dtls.metrics.render(out);
        }
    }

    async fn datagram(&self, peer: SocketAddr, bytes: &[u8]) {
        let shared = &self.shared;
        let message = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                shared.metrics.malformed.fetch_add(1, Relaxed);
                tracing::debug!(%peer, error = %e, "coap datagram dropped");
                if let Some((Kind::Confirmable, message_id)) = e.header {
                    shared.exchanges.send(peer, &Message::empty(Kind::Reset, message_id).encode()).await;
                }
                return;
            }
        };
        match message.kind {
            Kind::Acknowledgement | Kind::Reset => return shared.exchanges.answered(peer, &message),
            Kind::Confirmable if !message.code.is_request() => {
                // A ping (empty CON) or a response we never asked for: Reset (RFC 7252 §4.2).
                return shared.exchanges.send(peer, &Message::empty(Kind::Reset, message.message_id).encode()).await;
            }
            Kind::NonConfirmable if !message.code.is_request() => return,
            _ => {}
        }
        if let Some(seen) = shared.exchanges.begin(peer, message.message_id) {
            shared.metrics.duplicates.fetch_add(1, Relaxed);
            if message.kind == Kind::Confirmable {
                match seen {
                    Seen::Acknowledged => {
                        shared.exchanges.send(peer, &Message::empty(Kind::Acknowledgement, message.message_id).encode()).await
                    }
                    Seen::Answered(bytes) => shared.exchanges.send(peer, &bytes).await,
                    Seen::InProgress | Seen::Done => {}
                }
            }
            return;
        }
        let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
            shared.metrics.overloaded.fetch_add(1, Relaxed);
            shared.exchanges.forget(peer, message.message_id);
            if message.kind == Kind::Confirmable {
                let mut busy = Message::new(Kind::Acknowledgement, Code::SERVICE_UNAVAILABLE, message.message_id, message.token);
                busy.add_uint(option::MAX_AGE, 1);
                busy.payload = b"server busy; retry in a second".to_vec();
                shared.exchanges.send(peer, &busy.encode()).await;
            }
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            answer(&shared, peer, message).await;
            drop(permit);
        });
    }
}

/// Answers one request: piggybacked on the ACK when ready within `piggyback_wait`, otherwise an
/// empty ACK now and a Confirmable separate response once done (RFC 7252 §5.2.2).
async fn answer(shared: &Arc<Shared>, peer: SocketAddr, request: Message) {
    let (kind, message_id, token) = (request.kind, request.message_id, request.token.clone());
    let work = request::respond(shared, peer, request);
    tokio::pin!(work);
    let response: Response = if kind == Kind::Confirmable {
        // 0 means: always acknowledge at once, answer separately.
        let wait = shared.config.piggyback_wait;
        let piggyback = async { if wait.is_zero() { std::future::pending().await } else { (&mut work).await } };
        tokio::select! {
            biased;
            response = piggyback => {
                // Remembered before it is sent: a retransmission racing the answer gets it too.
                let bytes: Arc<[u8]> = response.message(Kind::Acknowledgement, message_id, token).encode().into();
                shared.exchanges.settle(peer, message_id, Seen::Answered(bytes.clone()));
                shared.exchanges.send(peer, &bytes).await;
                response
            }
            _ = tokio::time::sleep(wait) => {
                shared.exchanges.settle(peer, message_id, Seen::Acknowledged);
                shared.exchanges.send(peer, &Message::empty(Kind::Acknowledgement, message_id).encode()).await;
                let response = work.await;
                shared.metrics.separate_responses.fetch_add(1, Relaxed);
                let separate = response.message(Kind::Confirmable, 0, token);
                if shared.exchanges.send_confirmable(peer, separate).await != Delivery::Acknowledged {
                    tracing::info!(%peer, code = %response.code, "coap separate response was not acknowledged");
                }
                response
            }
        }
    } else {
        let response = work.await;
        let message = response.message(Kind::NonConfirmable, shared.exchanges.message_id(), token);
        shared.exchanges.settle(peer, message_id, Seen::Done);
        shared.exchanges.send(peer, &message.encode()).await;
        response
    };
    shared.metrics.answered(response.code);
    match response.then {
        Some(Then::DeliverCommands(device)) => {
            tokio::spawn(deliver(shared.clone(), device));
        }
        Some(Then::PushDesired(device, generation)) => twins::resume(shared, device, generation),
        None => {}
    }
}

/// Sends a device's waiting commands to its observation, one Confirmable notification at a
/// time, until none wait or the observation is gone.
async fn deliver(shared: Arc<Shared>, device: String) {
    let path = format!("devices/{device}/commands");
    while let Some((observer, command)) = shared.commands.next_delivery(&device) {
        if command.tracked {
            report(&shared, &device, &command.id, Carried::Sent);
        }
        let mut notification = Response::content(command.representation.to_vec());
        notification.options.push((option::OBSERVE, crate::message::encode_uint(observer.sequence)));
        let notification = request::cut_blocks(&shared, observer.peer, &path, None, notification);
        let message = notification.message(Kind::Confirmable, 0, observer.token.clone());
        match shared.exchanges.send_confirmable(observer.peer, message).await {
            Delivery::Acknowledged => {
                if command.tracked {
                    report(&shared, &device, &command.id, Carried::Delivered);
                }
                if shared.commands.done(&device, &command.id) {
                    shared.metrics.commands_delivered.fetch_add(1, Relaxed);
                    tracing::debug!(device, command = command.id, "coap command delivered");
                }
            }
            outcome => {
                tracing::info!(device, command = command.id, ?outcome, "coap observation ended; the command waits");
                shared.commands.lost(&device, observer.generation);
            }
        }
    }
}

/// Tells the platform how far a tracked command got to its device.
fn report(shared: &Shared, device: &str, id: &str, step: Carried) {
    if let Ok(device) = corral_model::DeviceId::new(device) {
        shared.command_service.progress(CommandProgress { device, id: id.to_string(), door: corral_model::Door::Coap, step });
    }
}

/// Every command sent for a device (whoever sent it, through whichever door) is kept for it if it
/// uses CoAP, and pushed to its observation if it has one. Ends with the server.
async fn hear_commands(
    shared: std::sync::Weak<Shared>,
    mut commands: tokio::sync::broadcast::Receiver<Arc<corral_services::Command>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let command = match commands.recv().await {
            Ok(c) => c,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "commands came faster than CoAP took them");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(shared) = shared.upgrade() else { return };
        let device = command.device.as_str();
        let queued = match command.tracked {
            true => Command::tracked(&command.id, &command.payload),
            false => Command::new(&command.id, &command.payload),
        };
        if shared.commands.push(device, queued) {
            tokio::spawn(deliver(shared, device.to_string()));
        }
    }
}

/// A device whose token was rotated, or whose status or gateway changed, loses its observations
/// (commands, desired document) and its DTLS session: it must register again with what holds
/// now. Ends with the server.
async fn forget_on_credential_changes(
    shared: std::sync::Weak<Shared>,
    mut changes: tokio::sync::broadcast::Receiver<corral_model::DeviceId>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let changed = changes.recv().await;
        let Some(shared) = shared.upgrade() else { return };
        match changed {
            Ok(device) => {
                shared.commands.forget(device.as_str());
                shared.desired.forget(device.as_str());
                if let Some(dtls) = &shared.dtls {
                    dtls.close_device(device.as_str());
                }
            }
            // Which devices changed is lost: no DTLS session is trusted any more.
            Err(RecvError::Lagged(_)) => shared.dtls.iter().for_each(|d| d.close_all()),
            Err(RecvError::Closed) => return,
        }
    }
}

impl corral_services::MetricsSource for CoapServer {
    fn render(&self, out: &mut String) {
        self.render_metrics(out);
    }
}
