//! The CONNECT → CONNACK handshake: protocol version, authentication, client id rules, session
//! attach (new, resumed, taken over) and the limits both sides announce.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::stream::FuturesOrdered;

use super::Connection;
use super::transport::{Transport, Writer};
use crate::codec::{
    ConnAck, Connect, Packet, Properties, ProtocolVersion, ReasonCode, decode_packet, encode_packet, peek_connect_level,
};
use crate::error::DecodeError;
use crate::hooks::{ConnectRefusal, ConnectRequest, Identity};
use crate::ratelimit::TokenBucket;
use crate::state::BrokerState;
use crate::{acl, metrics};

/// Reads the CONNECT (within `connect_timeout`), answers it and returns the live connection, or
/// `None` when the connection was refused or closed.
pub(super) async fn handshake(
    state: Arc<BrokerState>,
    transport: Transport,
    peer: SocketAddr,
    label: &'static str,
    certificate: Option<Vec<u8>>,
) -> Option<Connection> {
    let Transport { mut reader, mut writer } = transport;
    let deadline = tokio::time::Instant::now() + state.config.connect_timeout;
    let max = state.config.max_packet_size as usize;
    let mut rbuf = BytesMut::new();
    let connect = loop {
        // Peeked first: a failed decode consumes the frame.
        let level = peek_connect_level(&rbuf);
        match decode_packet(&mut rbuf, ProtocolVersion::V5, max) {
            Ok(Some(Packet::Connect(c))) => break c,
            Ok(Some(other)) => {
                tracing::debug!(%peer, packet = other.kind(), "first packet is not CONNECT; closing");
                return None;
            }
            Ok(None) => {}
            Err(e) => {
                refuse_undecodable(&state, &mut writer, level, &e, peer).await;
                return None;
            }
        }
        if state.is_shutting_down() {
            return None;
        }
        match tokio::time::timeout_at(deadline, reader.read_into(&mut rbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => metrics::add(&state.metrics.bytes_in, n as u64),
            Err(_) => {
                tracing::debug!(%peer, "no CONNECT within the connect timeout; closing");
                return None;
            }
        }
    };
    let connect = *connect;
    let version = connect.version;
    let refuse = |reason: ReasonCode| ConnAck { session_present: false, reason, properties: Properties::default() };

    if connect.properties.authentication_method.is_some() {
        // Enhanced authentication (AUTH exchanges) is not supported.
        send_connack(&state, &mut writer, version, refuse(ReasonCode::BAD_AUTHENTICATION_METHOD)).await;
        return None;
    }
    if state.metrics.connections_current.load(Ordering::Relaxed) as usize >= state.config.max_connections {
        tracing::warn!(%peer, max = state.config.max_connections, "connection limit reached; refusing");
        send_connack(&state, &mut writer, version, refuse(ReasonCode::QUOTA_EXCEEDED)).await;
        return None;
    }
    let mut client_id = connect.client_id.clone();
    let assigned = client_id.is_empty();
    if assigned {
        if version == ProtocolVersion::V311 && !connect.clean_start {
            send_connack(&state, &mut writer, version, refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)).await;
            return None;
        }
        client_id = format!("corral-{:016x}", rand::random::<u64>());
    }

    let open = state.config.allow_anonymous;
    // Open mode, as Mosquitto's `allow_anonymous`: no password, or a credential that names no
    // one, is anonymous; a known credential still is who it names.
    let identity = if open && connect.password.is_none() && certificate.is_none() {
        Identity::Anonymous
    } else {
        let request = ConnectRequest {
            client_id: client_id.clone(),
            username: connect.username.clone(),
            password: connect.password.clone(),
            protocol: version,
            peer_addr: peer,
            transport: label,
            client_id_assigned: assigned,
            certificate,
        };
        match state.hooks.authenticate(&request).await {
            Ok(identity) => identity,
            Err(ConnectRefusal::BadCredentials) if open => {
                tracing::info!(%peer, client_id = %client_id, username = ?connect.username, "credentials name no one: anonymous (open mode)");
                Identity::Anonymous
            }
            Err(refusal) => {
                tracing::info!(%peer, client_id = %client_id, username = ?connect.username, error = %refusal, "CONNECT refused");
                send_connack(&state, &mut writer, version, refuse(refusal.reason_code())).await;
                return None;
            }
        }
    };
    if let Some(will) = &connect.will
        && !will_allowed(&state, &identity, &will.topic).await
    {
        tracing::info!(%peer, client_id = %client_id, topic = %will.topic, "will topic denied by ACL; CONNECT refused");
        metrics::inc(&state.metrics.denied_publish);
        send_connack(&state, &mut writer, version, refuse(ReasonCode::NOT_AUTHORIZED)).await;
        return None;
    }
    if state.is_shutting_down() {
        send_connack(&state, &mut writer, version, refuse(ReasonCode::SERVER_UNAVAILABLE)).await;
        return None;
    }

    let version = connect.version;
    let connection = accept(state.clone(), connect, client_id, assigned, identity, (reader, writer), rbuf, peer);
    match connection {
        Ok(connection) => Some(connection),
        Err(mut writer) => {
            tracing::info!(%peer, "client id is a session another credential owns; CONNECT refused");
            send_connack(&state, &mut writer, version, refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)).await;
            None
        }
    }
}

/// Attaches the session, announces limits in CONNACK and builds the connection; gives the
/// writer back when the session belongs to another principal, to refuse the CONNECT.
#[allow(clippy::too_many_arguments)]
fn accept(
    state: Arc<BrokerState>,
    connect: Connect,
    client_id: String,
    assigned: bool,
    identity: Identity,
    (reader, writer): (super::transport::Reader, Writer),
    rbuf: BytesMut,
    peer: SocketAddr,
) -> Result<Connection, Writer> {
    let version = connect.version;
    let v5 = version == ProtocolVersion::V5;
    let config = &state.config;
    let expiry_secs = match version {
        ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
        // 3.1.1 clean session = 0: the session never expires.
        ProtocolVersion::V311 => {
            if connect.clean_start {
                0
            } else {
                u32::MAX
            }
        }
    };
    let mut keep_alive_secs = connect.keep_alive_secs;
    let mut server_keep_alive = None;
    if let Some(max) = config.max_keep_alive_secs
        && (keep_alive_secs == 0 || keep_alive_secs > max)
    {
        keep_alive_secs = max;
        server_keep_alive = Some(max);
    }
    let identity = Arc::new(identity);
    let client_id: Arc<str> = Arc::from(client_id);
    let generation = state.next_generation.fetch_add(1, Ordering::Relaxed);
    let Some(attached) = state.attach(&client_id, connect.clean_start, expiry_secs, version, &identity, generation) else {
        return Err(writer);
    };

    let mut properties = Properties::default();
    if v5 {
        properties.receive_maximum = Some(config.receive_maximum);
        properties.maximum_packet_size = Some(config.max_packet_size);
        properties.topic_alias_maximum = (config.topic_alias_maximum > 0).then_some(config.topic_alias_maximum);
        properties.server_keep_alive = server_keep_alive;
        if assigned {
            properties.assigned_client_identifier = Some(client_id.to_string());
        }
    }
    let connack = ConnAck { session_present: attached.session_present, reason: ReasonCode::SUCCESS, properties };
    let mut wbuf = BytesMut::new();
    let n = encode_packet(&Packet::ConnAck(connack), version, &mut wbuf);
    metrics::add(&state.metrics.bytes_out, n as u64);
    metrics::inc(&state.metrics.connections_total);

    let client_props = &connect.properties;
    let send_window = match version {
        ProtocolVersion::V5 => client_props.receive_maximum.unwrap_or(u16::MAX).min(config.max_inflight),
        ProtocolVersion::V311 => config.max_inflight,
    } as usize;
    let tenant = match &*identity {
        Identity::Device { tenant, .. } => Some(Arc::from(tenant.as_str())),
        other => other.tenant().map(Arc::from),
    };
    tracing::debug!(client_id = %client_id, %peer, ?version, session_present = attached.session_present, "client connected");
    state.hooks.on_connected(&identity, &client_id);
    if attached.session_present {
        // What the resumed session receives already (the ACL applied again by `attach`).
        let filters: Vec<String> = attached.session.lock().subscriptions.keys().cloned().collect();
        if !filters.is_empty() {
            state.hooks.on_subscribed(&identity, &client_id, &filters, true);
        }
    }
    Ok(Connection {
        rate: config.publish_rate_limit.map(|limit| TokenBucket::new(limit, Instant::now())),
        state: state.clone(),
        reader,
        writer,
        rbuf,
        wbuf,
        peer,
        version,
        client_id,
        identity,
        tenant,
        session: attached.session,
        generation,
        keep_alive: (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500)),
        last_packet_at: Instant::now(),
        send_window,
        client_max_packet: client_props.maximum_packet_size.map_or(usize::MAX, |m| m as usize),
        client_alias_max: if v5 { client_props.topic_alias_maximum.unwrap_or(0) } else { 0 },
        inbound_aliases: HashMap::new(),
        outbound_aliases: HashMap::new(),
        will: connect.will.map(Box::new),
        session_expiry_secs: expiry_secs,
        staged: FuturesOrdered::new(),
        routes_held: 0,
        acks: FuturesOrdered::new(),
        unacked_inbound: 0,
        throttled_until: None,
        problem: None,
        exit: None,
    })
}

/// May `identity` leave a will on `topic`? Asked now, so a will is never refused when it is due.
async fn will_allowed(state: &BrokerState, identity: &Identity, topic: &str) -> bool {
    let device_tenant = match acl::device_to_resolve(identity, topic) {
        Some(device) => crate::hooks::device_tenant(&*state.hooks, device).await,
        None => None,
    };
    acl::may_publish(identity, topic, &acl::Resolved(device_tenant.as_deref()))
}

async fn send_connack(state: &BrokerState, writer: &mut Writer, version: ProtocolVersion, connack: ConnAck) {
    metrics::inc(&state.metrics.connects_refused);
    let mut out = BytesMut::new();
    encode_packet(&Packet::ConnAck(connack), version, &mut out);
    let _ = writer.write_all(&out, Duration::from_secs(5)).await;
    writer.shutdown().await;
}

/// A CONNECT that does not decode: unsupported versions get the CONNACK of their own protocol;
/// a v5 CONNECT gets a CONNACK with the reason; anything else is just closed.
async fn refuse_undecodable(state: &BrokerState, writer: &mut Writer, level: Option<u8>, error: &DecodeError, peer: SocketAddr) {
    metrics::inc(&state.metrics.protocol_errors);
    tracing::info!(%peer, %error, "invalid CONNECT");
    let refuse = |reason| ConnAck { session_present: false, reason, properties: Properties::default() };
    match error {
        DecodeError::UnsupportedProtocolVersion(level) if *level < 5 => {
            send_connack(state, writer, ProtocolVersion::V311, refuse(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)).await;
        }
        DecodeError::UnsupportedProtocolVersion(_) => {
            send_connack(state, writer, ProtocolVersion::V5, refuse(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)).await;
        }
        other if level == Some(5) => {
            send_connack(state, writer, ProtocolVersion::V5, refuse(other.reason_code())).await;
        }
        _ => writer.shutdown().await,
    }
}
