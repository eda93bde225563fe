//! Errors of this crate: decoding a packet from a peer, and running the broker.

use crate::codec::ReasonCode;

/// Why bytes from a peer are not a valid packet. Each maps to the MQTT 5 DISCONNECT reason the
/// broker answers with ([`DecodeError::reason_code`]); an MQTT 3.1.1 peer is just disconnected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("invalid topic name")]
    TopicNameInvalid,
    #[error("invalid topic filter")]
    TopicFilterInvalid,
    /// CONNECT named a protocol level this broker does not speak (only 4 = 3.1.1 and 5 = 5.0).
    #[error("unsupported protocol level {0} (this broker speaks MQTT 3.1.1 and 5.0)")]
    UnsupportedProtocolVersion(u8),
}

impl DecodeError {
    /// The MQTT 5 reason code for a DISCONNECT (or CONNACK) answering this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::TooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::TopicNameInvalid => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::TopicFilterInvalid => ReasonCode::TOPIC_FILTER_INVALID,
            DecodeError::UnsupportedProtocolVersion(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}

/// Failures starting or running the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid broker config: {0}")]
    Config(String),
    #[error(
        "broker state in {path}: {message} (move the directory away to start empty, losing persistent sessions and retained messages)"
    )]
    State { path: String, message: String },
    #[error("broker state log: {0}")]
    Wal(#[from] corral_wal::WalError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Broker::new must be called inside a Tokio runtime")]
    NoRuntime,
    #[error("invalid topic name {0:?} (non-empty, no '+' or '#', at most 65535 bytes)")]
    InvalidTopic(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
}

impl BrokerError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BrokerError::Io { context: context.into(), source }
    }
}
