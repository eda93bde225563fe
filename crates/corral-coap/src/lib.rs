//! The CoAP door (RFC 7252) for constrained, battery-powered devices: telemetry over UDP with the
//! same decoders and the same durable pipeline as every other door, and commands for devices
//! that sleep between messages.
//!
//! Place on the data path: `device → **coap** → identity (`corral_services::Identity`) → decode → pipeline
//! ([`corral_ingest::Sink`]) → WAL`. `2.04 Changed` is sent only once the pipeline made the
//! data durable; a write slower than [`CoapConfig::piggyback_wait`] gets an empty ACK first and
//! a separate response later. A device's twin goes through `corral_services::DeviceTwins`:
//! `2.04` for a reported patch only once it is durable too.
//!
//! What it implements: Confirmable and Non-confirmable requests, piggybacked and separate
//! responses, duplicate detection by message id ([`exchange`]), tokens, Reset, Observe on a
//! device's commands (RFC 7641, [`commands`]) and on its desired twin document ([`twins`]),
//! FETCH, PATCH and iPATCH (RFC 8132) on its twin, block-wise transfer both ways (RFC 7959,
//! [`blockwise`]) and content formats JSON (50), merge-patch+json (52), CBOR (60), SenML JSON
//! (110), SenML CBOR (112). The resources are listed in [`request`]. Malformed datagrams are
//! answered with Reset (if Confirmable) or dropped, and counted; every table is bounded
//! ([`CoapConfig`]).
//!
//! The same server runs over DTLS 1.2 with per-device pre-shared keys ([`CoapServer::bind_dtls`],
//! [`dtls`]): the session says which device speaks, so no token crosses the network.
//!
//! ```no_run
//! # async fn run(services: corral_coap::Services) {
//! // services: the platform's Identity, Commands and DeviceTwins, and the ingest Sink.
//! let server = corral_coap::CoapServer::bind("0.0.0.0:5683".parse().unwrap(), Default::default(), services,
//!     Default::default()).await.unwrap();
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! server.serve(stopped).await;
//! # }
//! ```

pub mod artifacts;
pub mod block;
pub mod blockwise;
pub mod commands;
mod config;
pub mod dtls;
mod error;
pub mod exchange;
mod hooks;
pub mod message;
mod metrics;
pub mod observers;
pub mod request;
mod server;
mod settings;
mod transport;
pub mod twins;

pub use config::CoapConfig;
pub use dtls::DtlsConfig;
pub use error::{CoapError, FormatError};
pub use hooks::{Credential, Speaker};
pub use message::{Code, Kind, Message};
pub use server::{CoapServer, Services};
pub use settings::CoapSettings;
