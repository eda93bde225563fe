//! Errors of the CoAP door: datagrams that are not CoAP, and failures to start.

use crate::message::Kind;

/// A datagram that is not a well-formed CoAP message (RFC 7252 §4.2: a Confirmable one is
/// answered with Reset, anything else silently dropped; either way it is counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed CoAP message: {reason}")]
pub struct FormatError {
    /// Type and message id, when the 4-byte header could be read.
    pub header: Option<(Kind, u16)>,
    pub reason: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum CoapError {
    #[error("binding the CoAP listener to {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("invalid CoAP configuration: {0}")]
    Config(String),
}
