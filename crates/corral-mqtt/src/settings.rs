//! The `[mqtt]` section of the server's configuration: the listeners and the broker's limits.

use crate::{BrokerConfig, RateLimit};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[mqtt]`: MQTT 3.1.1/5.0 over TCP and TLS (and over WebSocket at `/mqtt` on the HTTP listener).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// MQTT over TCP, `host:port` (port 0 picks a free one), or `off` (which also turns off `/mqtt`).
    pub listen: String,
    /// Open mode for labs: clients without credentials may use topics outside `devices/`.
    pub allow_anonymous: bool,
    /// Largest packet accepted, bytes (MQTT 5 clients are told; larger ones get DISCONNECT 0x95).
    pub max_packet_bytes: u32,
    /// MQTT connections at once.
    pub max_connections: usize,
    /// QoS 1/2 messages in flight to one client.
    pub max_inflight: u16,
    /// Undelivered QoS 1/2 messages one session keeps (the oldest are dropped and counted beyond it).
    pub max_queued_messages: usize,
    /// A session whose subscriptions overlap (`#` and `a/+`) gets one copy of a message that
    /// matches several, at the highest QoS, as MQTT requires (false); or, as Mosquitto does, a
    /// copy per matching subscription (true).
    pub copy_per_subscription: bool,
    /// Seconds between two publications of the `$SYS/broker/…` tree (clients, messages, bytes,
    /// uptime) that Mosquitto's monitoring tools read; 0 publishes none.
    pub sys_interval_secs: u64,
    /// Longest keep-alive a client may ask for, seconds; one asking for more, or for none, is told
    /// this value (MQTT 5 Server Keep Alive; 3.1.1 clients are held to it). 0 takes the client's.
    pub max_keep_alive_secs: u16,
    /// Messages per second one client may publish; 0 = unlimited. Faster clients are slowed down.
    pub publish_rate: u32,
    /// MQTT over TLS listens here once `tls_cert` and `tls_key` are set (HTTPS uses them too).
    pub tls_listen: String,
    /// PEM certificate chain (server certificate first) of the MQTTS and HTTPS listeners.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate (keep it mode 0600).
    pub tls_key: Option<PathBuf>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            listen: "0.0.0.0:1883".into(),
            allow_anonymous: false,
            max_packet_bytes: 1 << 20,
            max_connections: 100_000,
            max_inflight: 128,
            max_queued_messages: 1000,
            copy_per_subscription: false,
            sys_interval_secs: 10,
            max_keep_alive_secs: 0,
            publish_rate: 0,
            tls_listen: "0.0.0.0:8883".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl MqttSettings {
    /// Errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_packet_bytes < 64 || self.max_connections == 0 || self.max_inflight == 0 || self.max_queued_messages == 0 {
            return Err("max_packet_bytes must be >= 64; max_connections, max_inflight, max_queued_messages positive".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key go together (PEM certificate chain and its private key)".into());
        }
        Ok(())
    }

    /// The broker with these limits, its state under `data_dir`.
    pub fn broker_config(&self, data_dir: PathBuf) -> BrokerConfig {
        BrokerConfig {
            data_dir: Some(data_dir),
            allow_anonymous: self.allow_anonymous,
            max_packet_size: self.max_packet_bytes,
            max_connections: self.max_connections,
            max_inflight: self.max_inflight,
            max_queued_messages: self.max_queued_messages,
            copy_per_subscription: self.copy_per_subscription,
            max_keep_alive_secs: (self.max_keep_alive_secs > 0).then_some(self.max_keep_alive_secs),
            sys_interval: (self.sys_interval_secs > 0).then(|| std::time::Duration::from_secs(self.sys_interval_secs)),
            publish_rate_limit: (self.publish_rate > 0)
                .then(|| RateLimit { messages_per_second: self.publish_rate, burst: self.publish_rate.max(10) }),
            ..BrokerConfig::default()
        }
    }
}
