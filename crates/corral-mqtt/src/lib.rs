//! MQTT 3.1.1 and 5.0 broker for Corral: codec, sessions, subscription trie, retained messages,
//! wills, inflight windows, least-privilege ACL and durable broker state.
//!
//! # Place on the data path
//!
//! ```text
//! device ──MQTT──► corral-mqtt ──► identity (hooks.authenticate) ──► ACL
//!                      │  platform topic (devices/<id>/telemetry, attributes, twin/reported)
//!                      ├──► hooks.on_platform_publish: decode now, then route (QoS 0/1) and
//!                      │      ack after the WAL fsync (QoS 2: route after the fsync too)
//!                      └──► route to subscribers (live fan-out, persistent sessions, retained)
//! ```
//!
//! The broker is the MQTT transport and live fan-out; it knows nothing of storage. The platform
//! plugs in through [`BrokerHooks`]: who a client is ([`Identity`]), what happens to telemetry,
//! and lifecycle notifications. [`PlatformDoor`] is the platform's implementation, written
//! against the service traits of `corral-services` and the ingest `Sink` (decode here, then the
//! same corridor as every door); [`carry_commands`] joins the broker to the `Commands` service. The broker's own durable state (persistent
//! sessions, queued QoS 1/2 messages, retained messages) lives in `BrokerConfig::data_dir` as an
//! operation log on `corral-wal` plus snapshots; a QoS 1/2 PUBACK/PUBREC leaves only after every
//! state change it caused is fsynced.
//!
//! # Main types
//!
//! - [`Broker`]: `new` (`with_clock` to give it the time sessions and wills expire by),
//!   `serve_tcp`, `serve_connection` (WebSocket/TLS streams), `publish_from_platform`,
//!   `publish_with_properties` (MQTT 5 properties; says which sessions queued it), `tap`,
//!   `acknowledgements` (delivery receipts, [`Acknowledged`]), `session_holds` and
//!   `subscribers` (what a session still holds, who would get a topic), `kick_device`,
//!   `disconnect_client_where`, `shutdown`, `metrics`.
//! - [`BrokerConfig`]: limits (packet size, inflight, queues, rate limit, timeouts).
//! - [`BrokerHooks`], [`Identity`], [`ConnectRequest`], [`ConnectRefusal`], [`PublishRefusal`],
//!   [`InboundPublish`], [`DisconnectKind`], [`TenantLookup`]: the platform seam.
//! - [`codec`]: the pure wire format (also used by tests and load generators).
//! - [`MetricsSnapshot`]: counters for `/metrics`.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use corral_mqtt::*;
//!
//! struct Platform;
//!
//! #[async_trait::async_trait]
//! impl BrokerHooks for Platform {
//!     async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ConnectRefusal> {
//!         match req.password.as_deref() {
//!             Some(b"secret") => Ok(Identity::Device {
//!                 id: req.client_id.clone(),
//!                 tenant: "default".into(),
//!                 children: vec![],
//!             }),
//!             _ => Err(ConnectRefusal::BadCredentials),
//!         }
//!     }
//!     fn on_platform_publish(&self, _who: &Identity, p: &InboundPublish) -> Result<PlatformWrite, PublishRefusal> {
//!         let bytes = p.payload.len();
//!         let device = p.device.clone();
//!         // Resolve only once the data is durable: the broker acknowledges after it.
//!         Ok(Box::pin(async move {
//!             println!("{bytes} bytes of telemetry from {device}");
//!             Ok(())
//!         }))
//!     }
//!     fn device_tenant(&self, _device: &str) -> Option<String> {
//!         Some("default".into())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = BrokerConfig { data_dir: Some("corral-data/mqtt".into()), ..Default::default() };
//! let broker = Broker::new(config, Arc::new(Platform))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1883").await?;
//! let server = tokio::spawn({
//!     let broker = broker.clone();
//!     async move { broker.serve_tcp(listener).await }
//! });
//! broker.publish_from_platform("devices/d1/commands/reboot", "{}", QoS::AtLeastOnce, false).await?;
//! broker.shutdown(std::time::Duration::from_secs(5)).await;
//! server.await??;
//! # Ok(())
//! # }
//! ```

pub mod codec;
pub mod topic;

mod acl;
mod broker;
mod config;
mod connection;
mod door;
mod error;
mod hooks;
mod message;
mod metrics;
mod persist;
mod queue;
mod ratelimit;
mod receipts;
mod retained;
mod router;
mod session;
mod settings;
mod state;
mod sys;
mod tap;
mod trie;
mod will;

pub use broker::{Broker, PublishProperties};
pub use codec::{QoS, ReasonCode};
pub use config::{BrokerConfig, QueueOverflow, RateLimit};
pub use door::{
    ConnectedDevices, DoorMetrics, PlatformDoor, carry_commands, carry_twins, disconnect_on_broker_user_changes,
    disconnect_on_credential_changes,
};
pub use error::{BrokerError, DecodeError};
pub use hooks::{
    BrokerHooks, ConnectRefusal, ConnectRequest, DisconnectKind, Identity, InboundPublish, PlatformWrite, PublishRefusal, Role,
    TenantLookup,
};
pub use metrics::MetricsSnapshot;
pub use receipts::{Acknowledged, Recipient};
pub use settings::MqttSettings;
pub use tap::Tapped;
pub use topic::PlatformTopic;
