//! The `[coap]` section of the server's configuration: the listeners and what an operator tunes
//! of [`CoapConfig`] and [`DtlsConfig`] (the rest keeps RFC 7252's values).

use crate::{CoapConfig, DtlsConfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[coap]`: CoAP over UDP and over DTLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CoapSettings {
    /// CoAP over UDP, `host:port`, or `off`: `POST devices/<id>/telemetry?t=<token>`, Observe `devices/<id>/commands`.
    pub listen: String,
    /// CoAP over DTLS (coaps), `host:port` (the usual port is 5684) or `off`: a device handshakes with PSK identity = its id
    /// and the key set by `corral device psk <id>`; its requests then need no token.
    pub dtls_listen: String,
    /// DTLS sessions at once.
    pub dtls_max_sessions: usize,
    /// Seconds an established DTLS session lives unheard of (sleepy devices keep theirs).
    pub dtls_idle_secs: u64,
    /// Largest request body, whole or assembled from Block1 blocks (4.13 above it).
    pub max_body_bytes: usize,
    /// A Confirmable request not durable within this many ms gets an empty ACK and a separate response later.
    pub piggyback_wait_ms: u64,
    /// Block size of answers, and the largest block taken from a client (16..1024).
    pub block_bytes: usize,
    /// Requests processed at once; beyond it Confirmable requests get 5.03 (Max-Age 1).
    pub max_in_flight: usize,
    /// Devices observing their commands at once, and separately devices observing their desired
    /// twin document (each device keeps its newest observation of each).
    pub max_observers: usize,
    /// Commands kept in memory per CoAP device until fetched...
    pub max_pending_commands: usize,
    /// ...for this many seconds.
    pub command_ttl_secs: u64,
}

impl Default for CoapSettings {
    fn default() -> Self {
        let (d, dtls) = (CoapConfig::default(), DtlsConfig::default());
        CoapSettings {
            listen: "0.0.0.0:5683".into(),
            // Off unless asked for, like HTTPS and MQTTS: a port nobody asked for is a surprise.
            dtls_listen: "off".into(),
            dtls_max_sessions: dtls.max_sessions,
            dtls_idle_secs: dtls.idle_timeout.as_secs(),
            max_body_bytes: d.max_body_bytes,
            piggyback_wait_ms: d.piggyback_wait.as_millis() as u64,
            block_bytes: d.block_bytes,
            max_in_flight: d.max_in_flight,
            max_observers: d.max_observers,
            max_pending_commands: d.max_pending_commands,
            command_ttl_secs: d.command_ttl.as_secs(),
        }
    }
}

impl CoapSettings {
    /// The server's settings: these over the RFC 7252 defaults.
    pub fn server(&self) -> CoapConfig {
        CoapConfig {
            max_body_bytes: self.max_body_bytes,
            piggyback_wait: Duration::from_millis(self.piggyback_wait_ms),
            block_bytes: self.block_bytes,
            max_in_flight: self.max_in_flight,
            max_observers: self.max_observers,
            max_pending_commands: self.max_pending_commands,
            command_ttl: Duration::from_secs(self.command_ttl_secs),
            ..CoapConfig::default()
        }
    }

    pub fn dtls(&self) -> DtlsConfig {
        DtlsConfig {
            max_sessions: self.dtls_max_sessions,
            idle_timeout: Duration::from_secs(self.dtls_idle_secs),
            ..DtlsConfig::default()
        }
    }

    /// Errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes < 1024 {
            return Err("max_body_bytes must be >= 1024".into());
        }
        if self.dtls_max_sessions == 0 || self.dtls_idle_secs == 0 {
            return Err("dtls_max_sessions and dtls_idle_secs must be positive".into());
        }
        self.server().validate()
    }
}
