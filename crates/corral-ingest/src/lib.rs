//! Ingest: the decoders that turn a device's bytes into a [`Batch`], and the [`Pipeline`] that makes
//! a decoded batch durable and tells the rest of the platform about it.
//!
//! Place on the data path: `transport → identity → **decode → pipeline** → WAL → write buffer`.
//! Transports call [`decode`] and then [`Sink::submit`]; they never see storage. HTTP and CoAP do
//! so themselves; MQTT's publishes are still decoded in the binary's broker hooks (issue 17
//! moves that into `corral-mqtt`). The pipeline reaches storage through its own [`DurableStore`] trait, which the binary
//! implements over `corral-store`, and tells the registry who was heard from through [`Presence`].
//!
//! ```
//! use corral_ingest::decode::{decode_json, Limits};
//! use corral_model::TableName;
//! let batch = decode_json(br#"{"temperature": 21.5}"#, "truck-7", &TableName::telemetry(), 0,
//!     &Limits::default()).unwrap();
//! assert_eq!(batch.rows[0].fields[0].0, "temperature");
//! ```

pub mod decode;
mod pipeline;

pub use pipeline::{Accepted, DurableStore, Observer, Pipeline, Presence, Sink};

pub use corral_model::{Batch, Envelope, WireError};
