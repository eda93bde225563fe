//! CoAP over DTLS 1.2 ("coaps", RFC 7252 §9.1) in PreSharedKey mode: a device opens a session
//! with its device id as PSK identity and the key the registry holds for it, and every CoAP
//! message after that travels encrypted and is attributed to that device. No token crosses the
//! network.
//!
//! OpenSSL runs the protocol; this module feeds it datagrams and sends what it writes. Each peer
//! address has one `Session`, created by a ClientHello and bounded in number and age. A
//! stateless cookie (HelloVerifyRequest, RFC 6347 §4.2.1) proves the client's address before the
//! server answers with its larger flight, so the port cannot be used to amplify floods.
//!
//! The registry lookup is asynchronous but OpenSSL's PSK callback is not, so the identity is
//! read from the ClientKeyExchange before OpenSSL sees the datagram, the key fetched, and left
//! where the callback finds it (`PskSlot`).

use corral_model::{ErrorKind, WireError};
use corral_services::Identity;
use corral_services::metrics::Exposition;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVerifyMode};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Limits of the DTLS layer.
#[derive(Debug, Clone, PartialEq)]
pub struct DtlsConfig {
    /// Sessions at once, handshaking or established; a ClientHello beyond it is dropped (and
    /// counted) after the expired sessions were swept.
    pub max_sessions: usize,
    /// How long a handshake may take from the first ClientHello.
    pub handshake_timeout: Duration,
    /// An established session unheard of this long is forgotten: the device must handshake
    /// again. Long, because sleepy devices keep a session across their sleep.
    pub idle_timeout: Duration,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig { max_sessions: 100_000, handshake_timeout: Duration::from_secs(30), idle_timeout: Duration::from_secs(3600) }
    }
}

/// Cipher suites offered, strongest first. TLS_PSK_WITH_AES_128_CCM_8 is the one RFC 7252
/// makes mandatory for constrained devices; the others are what general-purpose clients
/// (libcoap with OpenSSL or GnuTLS, aiocoap) prefer.
const CIPHERS: &str = "ECDHE-PSK-CHACHA20-POLY1305:PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384:PSK-AES128-CCM8:PSK-AES128-CCM:ECDHE-PSK-AES128-CBC-SHA256:PSK-AES128-CBC-SHA256";

/// Path MTU assumed for records: the IPv6 minimum, so a handshake flight never needs IP
/// fragmentation on any path.
const MTU: u32 = 1280;

/// The key for the identity a handshake announced, once fetched (or the reason there is none).
/// `used` is set by OpenSSL's callback when it took the key: from then on the entry is fixed, so
/// a later forged ClientKeyExchange cannot change whom the session is attributed to.
struct PskEntry {
    identity: String,
    key: Result<Vec<u8>, WireError>,
    used: bool,
}

type PskSlot = Arc<Mutex<Option<PskEntry>>>;

/// One peer's session: OpenSSL's state machine over a [`Pipe`].
struct Session {
    stream: SslStream<Pipe>,
    psk: PskSlot,
    /// The device the session authenticated, once the handshake finished.
    device: Option<String>,
    started: Instant,
    last_heard: Instant,
}

/// The datagram OpenSSL reads next, and the datagrams it wrote (each write is one record or
/// flight, sent as one datagram).
#[derive(Default)]
struct Pipe {
    incoming: Option<Vec<u8>>,
    outgoing: Vec<Vec<u8>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let datagram = self.incoming.take().ok_or(io::ErrorKind::WouldBlock)?;
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counters of the DTLS layer, for `/metrics`.
#[derive(Debug, Default)]
pub struct DtlsMetrics {
    pub handshakes: AtomicU64,
    /// Failed handshakes by reason (`FAILURE_REASONS`).
    pub failures: [AtomicU64; 5],
    /// Records from a peer without a session, and ClientHellos refused at `max_sessions`.
    pub stray: AtomicU64,
    pub refused: AtomicU64,
    pub sessions: AtomicU64,
}

/// Why handshakes fail. A wrong key shows as `bad_key` only by timing out: records that fail
/// their MAC are dropped without an answer (RFC 6347 §4.1.2.7), so the device's Finished is
/// never read, and the handshake expires after its identity and key were known.
pub(crate) const FAILURE_REASONS: [&str; 5] = ["unknown_identity", "not_active", "bad_key", "timeout", "protocol"];

impl DtlsMetrics {
    pub fn render(&self, out: &mut String) {
        let mut e = Exposition::new(out);
        e.counter("corral_coaps_handshakes_total", "DTLS handshakes completed.", self.handshakes.load(Relaxed));
        let help = "DTLS handshakes that failed, by reason.";
        let mut failures = e.family("corral_coaps_handshake_failures_total", help, "counter");
        for (reason, count) in FAILURE_REASONS.into_iter().zip(&self.failures) {
            failures.sample(&[("reason", reason)], count.load(Relaxed));
        }
        let counters = [
            ("stray_records", "Datagrams from a peer without a DTLS session (dropped).", &self.stray),
            ("sessions_refused", "ClientHellos dropped because max_sessions were open.", &self.refused),
        ];
        for (name, help, counter) in counters {
            e.counter(&format!("corral_coaps_{name}_total"), help, counter.load(Relaxed));
        }
        e.gauge("corral_coaps_sessions", "DTLS sessions open (handshaking or established).", self.sessions.load(Relaxed));
    }
}

/// The DTLS sessions of one socket.
pub(crate) struct Dtls {
    socket: Arc<UdpSocket>,
    context: SslContext,
    peer_index: Index<Ssl, SocketAddr>,
    psk_index: Index<Ssl, PskSlot>,
    sessions: Mutex<HashMap<SocketAddr, Session>>,
    identity: Arc<dyn Identity>,
    config: DtlsConfig,
    pub metrics: DtlsMetrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dtls {
    pub fn new(socket: Arc<UdpSocket>, identity: Arc<dyn Identity>, config: DtlsConfig) -> Result<Dtls, ErrorStack> {
        let peer_index = Ssl::new_ex_index::<SocketAddr>()?;
        let psk_index = Ssl::new_ex_index::<PskSlot>()?;
        let mut builder = SslContext::builder(SslMethod::dtls_server())?;
        builder.set_cipher_list(CIPHERS)?;
        builder.set_verify(SslVerifyMode::NONE);
        builder.set_options(SslOptions::COOKIE_EXCHANGE | SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
        builder.set_psk_server_callback(move |ssl, identity, out| {
            let Some(slot) = ssl.ex_data(psk_index).cloned() else { return Ok(0) };
            let identity = identity.and_then(|i| std::str::from_utf8(i).ok()).unwrap_or_default();
            let mut entry = lock(&slot);
            match entry.as_mut() {
                Some(PskEntry { identity: known, key: Ok(key), used })
                    if known == identity && !*used && key.len() <= out.len() =>
                {
                    out[..key.len()].copy_from_slice(key);
                    *used = true;
                    Ok(key.len())
                }
                // 0 = unknown identity: OpenSSL ends the handshake with an alert.
                _ => Ok(0),
            }
        });
        // The cookie is an HMAC of the client's address under a key that lives as long as the
        // server: a client proves it receives at its address before the server does any work.
        let mut secret = [0u8; 32];
        openssl::rand::rand_bytes(&mut secret)?;
        let cookie_key = PKey::hmac(&secret)?;
        let generate_key = cookie_key.clone();
        let cookie = move |key: &PKey<openssl::pkey::Private>, peer: Option<&SocketAddr>| -> Result<Vec<u8>, ErrorStack> {
            let mut signer = Signer::new(MessageDigest::sha256(), key)?;
            signer.update(peer.map(|p| p.to_string()).unwrap_or_default().as_bytes())?;
            signer.sign_to_vec()
        };
        builder.set_cookie_generate_cb(move |ssl, out| {
            let mac = cookie(&generate_key, ssl.ex_data(peer_index))?;
            let n = mac.len().min(out.len());
            out[..n].copy_from_slice(&mac[..n]);
            Ok(n)
        });
        builder.set_cookie_verify_cb(move |ssl, presented| {
            cookie(&cookie_key, ssl.ex_data(peer_index))
                .is_ok_and(|mac| mac.len() == presented.len() && openssl::memcmp::eq(&mac, presented))
        });
        Ok(Dtls {
            socket,
            context: builder.build(),
            peer_index,
            psk_index,
            sessions: Mutex::default(),
            identity,
            config,
            metrics: DtlsMetrics::default(),
        })
    }

    /// Takes one datagram from `peer`: handshake progress, or records to decrypt. Returns the
    /// CoAP messages it carried; sends what the handshake answers.
    pub async fn open(&self, peer: SocketAddr, datagram: &[u8]) -> Vec<Vec<u8>> {
        if let Some(identity) = records::psk_identity(datagram) {
            self.fetch_key(peer, identity).await;
        }
        let (messages, outgoing) = self.feed(peer, datagram);
        self.send_all(peer, outgoing).await;
        messages
    }

    /// Encrypts a CoAP message for `peer` and sends it; dropped (like a lost datagram) when the
    /// peer has no established session any more.
    pub async fn send(&self, peer: SocketAddr, message: &[u8]) {
        let outgoing = {
            let mut sessions = lock(&self.sessions);
            let Some(session) = sessions.get_mut(&peer).filter(|s| s.device.is_some()) else {
                tracing::debug!(%peer, "coaps: no session to send on");
                return;
            };
            if let Err(e) = session.stream.ssl_write(message) {
                tracing::debug!(%peer, error = %e, "coaps: encrypting failed");
            }
            std::mem::take(&mut session.stream.get_mut().outgoing)
        };
        self.send_all(peer, outgoing).await;
    }

    /// The device whose key opened `peer`'s session.
    pub fn device_of(&self, peer: SocketAddr) -> Option<String> {
        lock(&self.sessions).get(&peer).and_then(|s| s.device.clone())
    }

    /// Ends the sessions of `device` (its key changed, or it left active): a close_notify alert
    /// tells it to handshake again.
    pub fn close_device(&self, device: &str) {
        self.close_where(|d| d == device);
    }

    /// Ends every established session: when credential changes were missed, none is trusted.
    pub fn close_all(&self) {
        self.close_where(|_| true);
    }

    fn close_where(&self, which: impl Fn(&str) -> bool) {
        let mut sessions = lock(&self.sessions);
        let peers: Vec<SocketAddr> =
            sessions.iter().filter(|(_, s)| s.device.as_deref().is_some_and(&which)).map(|(p, _)| *p).collect();
        for peer in peers {
            if let Some(mut session) = sessions.remove(&peer) {
                let _ = session.stream.shutdown();
                for datagram in session.stream.get_mut().outgoing.drain(..) {
                    let _ = self.socket.try_send_to(&datagram, peer);
                }
                tracing::info!(%peer, device = session.device.as_deref(), "coaps session closed: the device's credentials changed");
            }
        }
        self.metrics.sessions.store(sessions.len() as u64, Relaxed);
    }

    /// Forgets handshakes that took too long and sessions idle too long.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|peer, s| match s.device {
            Some(_) => now.duration_since(s.last_heard) < self.config.idle_timeout,
            None if now.duration_since(s.started) < self.config.handshake_timeout => true,
            None => {
                let (reason, detail) = match lock(&s.psk).as_ref() {
                    Some(PskEntry { identity, key: Ok(_), .. }) => {
                        (2, format!("{identity} named its identity but never finished: it holds a different key"))
                    }
                    _ => (3, "the handshake did not finish in time".to_string()),
                };
                self.metrics.failures[reason].fetch_add(1, Relaxed);
                tracing::info!(%peer, reason = FAILURE_REASONS[reason], detail, "coaps handshake failed");
                false
            }
        });
        self.metrics.sessions.store(sessions.len() as u64, Relaxed);
    }

    /// Looks up the key for `identity` before OpenSSL asks for it, for a handshake in progress.
    async fn fetch_key(&self, peer: SocketAddr, identity: String) {
        let slot = match lock(&self.sessions).get(&peer) {
            Some(s) if s.device.is_none() => s.psk.clone(),
            _ => return,
        };
        if lock(&slot).as_ref().is_some_and(|e| e.identity == identity || e.used) {
            return; // a retransmitted flight, or the key was already taken
        }
        let key = self.identity.psk(&identity).await;
        let mut entry = lock(&slot);
        if !entry.as_ref().is_some_and(|e| e.used) {
            *entry = Some(PskEntry { identity, key, used: false });
        }
    }

    /// Runs one datagram through the peer's session (creating it for a ClientHello).
    fn feed(&self, peer: SocketAddr, datagram: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        let hello = records::is_client_hello(datagram);
        // A ClientHello opens a session only once it carries a valid cookie (the client proved it
        // receives at its address); until then it gets a HelloVerifyRequest and the server keeps
        // nothing. An established session is replaced only by such a proven handshake, so a
        // spoofed ClientHello cannot end a device's session.
        if hello && sessions.get(&peer).is_none_or(|s| s.device.is_some()) {
            drop(sessions);
            let (session, outgoing) = match self.listen(peer, datagram, now) {
                Ok(found) => found,
                Err(e) => {
                    self.metrics.failures[4].fetch_add(1, Relaxed);
                    tracing::debug!(%peer, error = %e, "coaps: ClientHello refused");
                    return (Vec::new(), Vec::new());
                }
            };
            let Some(mut session) = session else { return (Vec::new(), outgoing) };
            sessions = lock(&self.sessions);
            if !sessions.contains_key(&peer) && sessions.len() >= self.config.max_sessions {
                drop(sessions);
                self.sweep();
                sessions = lock(&self.sessions);
                if sessions.len() >= self.config.max_sessions {
                    self.metrics.refused.fetch_add(1, Relaxed);
                    tracing::warn!(%peer, max = self.config.max_sessions, "coaps: too many sessions; handshake refused");
                    return (Vec::new(), Vec::new());
                }
            }
            // The verified ClientHello is inside OpenSSL now: accepting continues from it.
            let mut out = outgoing;
            match session.stream.accept() {
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Ok(()) => {}
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "coaps handshake failed at its start");
                    return (Vec::new(), out);
                }
            }
            out.append(&mut session.stream.get_mut().outgoing);
            sessions.insert(peer, session);
            self.metrics.sessions.store(sessions.len() as u64, Relaxed);
            return (Vec::new(), out);
        }
        if !sessions.contains_key(&peer) {
            self.metrics.stray.fetch_add(1, Relaxed);
            return (Vec::new(), Vec::new());
        }
        let Some(session) = sessions.get_mut(&peer) else { return (Vec::new(), Vec::new()) };
        session.last_heard = now;
        session.stream.get_mut().incoming = Some(datagram.to_vec());
        let mut messages = Vec::new();
        let mut ended = false;
        if session.device.is_none() {
            match session.stream.accept() {
                Ok(()) => {
                    // The device is the identity whose key OpenSSL took, nothing else.
                    let device = lock(&session.psk).as_ref().filter(|e| e.used && e.key.is_ok()).map(|e| e.identity.clone());
                    let negotiated =
                        session.stream.ssl().psk_identity().and_then(|i| std::str::from_utf8(i).ok()).map(str::to_string);
                    match device.filter(|d| Some(d) == negotiated.as_ref()) {
                        Some(device) => {
                            tracing::info!(%peer, device, cipher = session.stream.ssl().current_cipher().map(|c| c.name()), "coaps session established");
                            self.metrics.handshakes.fetch_add(1, Relaxed);
                            session.device = Some(device);
                        }
                        None => {
                            self.metrics.failures[4].fetch_add(1, Relaxed);
                            tracing::warn!(%peer, ?negotiated, "coaps handshake finished without the key it announced; dropped");
                            ended = true;
                        }
                    }
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => {
                    let (reason, detail) = failure(&session.psk, &e);
                    self.metrics.failures[reason].fetch_add(1, Relaxed);
                    tracing::info!(%peer, reason = FAILURE_REASONS[reason], detail, "coaps handshake failed");
                    ended = true;
                }
            }
        }
        if session.device.is_some() {
            let mut buf = vec![0u8; 16 * 1024 + 256];
            loop {
                match session.stream.ssl_read(&mut buf) {
                    Ok(n) => messages.push(buf[..n].to_vec()),
                    Err(e) if e.code() == ErrorCode::WANT_READ => break,
                    Err(e) => {
                        // close_notify (ZERO_RETURN) or a fatal alert: the session is over.
                        tracing::debug!(%peer, error = %e, "coaps session ended by the peer");
                        ended = true;
                        break;
                    }
                }
            }
        }
        let outgoing = std::mem::take(&mut session.stream.get_mut().outgoing);
        if ended {
            sessions.remove(&peer);
            self.metrics.sessions.store(sessions.len() as u64, Relaxed);
        }
        (messages, outgoing)
    }

    /// Runs OpenSSL's stateless cookie exchange (`DTLSv1_listen`) on a ClientHello: without a
    /// valid cookie the answer is a HelloVerifyRequest and no session; with one, the session,
    /// ready for `accept` to continue the handshake.
    fn listen(&self, peer: SocketAddr, datagram: &[u8], now: Instant) -> Result<(Option<Session>, Vec<Vec<u8>>), ErrorStack> {
        let mut session = self.new_session(peer, now)?;
        session.stream.get_mut().incoming = Some(datagram.to_vec());
        let verified = listen::dtls_listen(session.stream.ssl())?;
        let outgoing = std::mem::take(&mut session.stream.get_mut().outgoing);
        Ok((verified.then_some(session), outgoing))
    }

    fn new_session(&self, peer: SocketAddr, now: Instant) -> Result<Session, ErrorStack> {
        let mut ssl = Ssl::new(&self.context)?;
        ssl.set_mtu(MTU)?;
        let psk = PskSlot::default();
        ssl.set_ex_data(self.peer_index, peer);
        ssl.set_ex_data(self.psk_index, psk.clone());
        let stream = SslStream::new(ssl, Pipe::default())?;
        Ok(Session { stream, psk, device: None, started: now, last_heard: now })
    }

    async fn send_all(&self, peer: SocketAddr, datagrams: Vec<Vec<u8>>) {
        for datagram in datagrams {
            if let Err(e) = self.socket.send_to(&datagram, peer).await {
                tracing::debug!(%peer, error = %e, "coaps send failed");
            }
        }
    }
}

/// `DTLSv1_listen`, which the `openssl` crate does not wrap.
mod listen {
    use foreign_types::ForeignTypeRef;
    use openssl::error::ErrorStack;
    use openssl::ssl::SslRef;

    unsafe extern "C" {
        fn DTLSv1_listen(s: *mut openssl_sys::SSL, client: *mut std::ffi::c_void) -> std::os::raw::c_int;
        fn BIO_ADDR_new() -> *mut std::ffi::c_void;
        fn BIO_ADDR_free(addr: *mut std::ffi::c_void);
    }

    /// True when the datagram waiting in the SSL's read BIO is a ClientHello with a valid
    /// cookie; false when OpenSSL answered it with a HelloVerifyRequest (or it was not a
    /// ClientHello at all).
    pub fn dtls_listen(ssl: &SslRef) -> Result<bool, ErrorStack> {
        // SAFETY: `ssl` is a live SSL with its BIOs set (an SslStream's); the address is
        // allocated and freed here, and OpenSSL only writes into it during the call.
        unsafe {
            let client = BIO_ADDR_new();
            if client.is_null() {
                return Err(ErrorStack::get());
            }
            let result = DTLSv1_listen(ssl.as_ptr(), client);
            BIO_ADDR_free(client);
            match result {
                1 => Ok(true),
                0 => Ok(false),
                _ => Err(ErrorStack::get()),
            }
        }
    }
}

/// Why a handshake failed, as an index into [`FAILURE_REASONS`], and the detail to log.
fn failure(psk: &PskSlot, error: &openssl::ssl::Error) -> (usize, String) {
    match lock(psk).as_ref() {
        Some(PskEntry { key: Err(why), .. }) if why.kind == ErrorKind::Forbidden => (1, why.message.clone()),
        Some(PskEntry { key: Err(why), .. }) if why.kind == ErrorKind::Unauthenticated => (0, why.message.clone()),
        Some(PskEntry { key: Err(why), .. }) => (4, why.message.clone()),
        Some(PskEntry { identity, key: Ok(_), .. }) => (4, format!("identity {identity}: {error}")),
        None => (4, error.to_string()),
    }
}

/// Just enough of the DTLS record layer (RFC 6347 §4.1, §4.2.2) to see, before OpenSSL does,
/// whether a datagram opens a handshake and which PSK identity it names.
pub mod records {
    const HANDSHAKE: u8 = 22;
    const CLIENT_HELLO: u8 = 1;
    const CLIENT_KEY_EXCHANGE: u8 = 16;
    const RECORD_HEADER: usize = 13;
    const HANDSHAKE_HEADER: usize = 12;

    /// The unencrypted (epoch 0) handshake fragments of a datagram: message type, fragment
    /// offset, fragment bytes.
    fn handshakes(mut datagram: &[u8]) -> Vec<(u8, u32, &[u8])> {
        let mut out = Vec::new();
        while datagram.len() >= RECORD_HEADER {
            let epoch = u16::from_be_bytes([datagram[3], datagram[4]]);
            let length = u16::from_be_bytes([datagram[11], datagram[12]]) as usize;
            let Some(mut fragment) = datagram.get(RECORD_HEADER..RECORD_HEADER + length) else { break };
            if datagram[0] == HANDSHAKE && epoch == 0 {
                while fragment.len() >= HANDSHAKE_HEADER {
                    let offset = u32::from_be_bytes([0, fragment[6], fragment[7], fragment[8]]);
                    let fragment_length = u32::from_be_bytes([0, fragment[9], fragment[10], fragment[11]]) as usize;
                    let end = (HANDSHAKE_HEADER + fragment_length).min(fragment.len());
                    out.push((fragment[0], offset, &fragment[HANDSHAKE_HEADER..end]));
                    fragment = &fragment[end..];
                }
            }
            datagram = &datagram[RECORD_HEADER + length..];
        }
        out
    }

    pub fn is_client_hello(datagram: &[u8]) -> bool {
        handshakes(datagram).iter().any(|(kind, _, _)| *kind == CLIENT_HELLO)
    }

    /// The PSK identity of a ClientKeyExchange (its first field in every PSK key exchange,
    /// RFC 4279 §2 and RFC 5489 §2).
    pub fn psk_identity(datagram: &[u8]) -> Option<String> {
        let (_, _, body) =
            handshakes(datagram).into_iter().find(|(kind, offset, _)| *kind == CLIENT_KEY_EXCHANGE && *offset == 0)?;
        let length = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
        String::from_utf8(body.get(2..2 + length)?.to_vec()).ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn record(epoch: u16, messages: &[(u8, &[u8])]) -> Vec<u8> {
            let mut fragment = Vec::new();
            for (kind, body) in messages {
                fragment.push(*kind);
                let len = (body.len() as u32).to_be_bytes();
                fragment.extend_from_slice(&len[1..]); // length
                fragment.extend_from_slice(&[0, 0]); // message_seq
                fragment.extend_from_slice(&[0, 0, 0]); // fragment_offset
                fragment.extend_from_slice(&len[1..]); // fragment_length
                fragment.extend_from_slice(body);
            }
            let mut out = vec![HANDSHAKE, 0xfe, 0xfd];
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&[0; 6]);
            out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
            out.extend_from_slice(&fragment);
            out
        }

        #[test]
        fn finds_the_identity_of_a_client_key_exchange() {
            let mut datagram = record(0, &[(CLIENT_KEY_EXCHANGE, b"\x00\x06meter1")]);
            datagram.extend(record(1, &[(20, b"encrypted finished")]));
            assert_eq!(psk_identity(&datagram).as_deref(), Some("meter1"));
            assert!(!is_client_hello(&datagram));
        }

        #[test]
        fn sees_a_client_hello_and_ignores_garbage() {
            assert!(is_client_hello(&record(0, &[(CLIENT_HELLO, b"hello")])));
            assert!(!is_client_hello(&record(1, &[(CLIENT_HELLO, b"hello")])), "an encrypted record is not read");
            for garbage in [
                &b""[..],
                b"\x16\xfe",
                b"\x16\xfe\xfd\0\0\0\0\0\0\0\0\xff\xff",
                b"\x16\xfe\xfd\0\0\0\0\0\0\0\0\0\x0e\x10\0\0\x20\0\0\0\0\0\0\0\x20\xff\xff",
            ] {
                assert!(!is_client_hello(garbage));
                assert_eq!(psk_identity(garbage), None);
            }
        }
    }
}
