//! Corral's shared vocabulary. Every room on the data path speaks these types; none of them does I/O.
//!
//! - [`DeviceId`], [`TenantId`], [`TableName`]: validated names. Constructing one is the validation.
//! - [`Envelope`]: who sent a message, through which [`Door`], and when it arrived.
//! - [`Batch`]: decoded telemetry for one table, rows of typed [`FieldValue`]s, ready for the WAL.
//! - [`WireError`]: an error that reaches a client, with the [`ErrorKind`] each transport maps once
//!   to its own status (HTTP status, MQTT reason code, CoAP code).
//!
//! ```
//! use corral_model::{Batch, DeviceId, FieldValue, Row, TableName};
//! let device = DeviceId::new("truck-7").unwrap();
//! let mut batch = Batch::new(TableName::new("telemetry").unwrap());
//! batch.rows.push(Row::new(1_700_000_000_000_000_000, device.as_str())
//!     .field("temperature", FieldValue::Float(21.5)));
//! assert_eq!(batch.value_count(), 1);
//! ```

mod batch;
mod error;
mod ids;
pub mod schema;

pub use batch::{Batch, FieldType, FieldValue, Row};
pub use error::{ErrorKind, WireError};
pub use ids::{DeviceId, IdError, TableName, TenantId};

use serde::{Deserialize, Serialize};

/// The door a message came in through. Recorded for metrics and logs, never for authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Door {
    Http,
    Mqtt,
    Coap,
    LineProtocol,
    Simulator,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Http => "http",
            Door::Mqtt => "mqtt",
            Door::Coap => "coap",
            Door::LineProtocol => "line_protocol",
            Door::Simulator => "simulator",
        }
    }
}

/// Who sent what, when, through which door. Built by a transport after the registry has said who
/// the sender is; the pipeline trusts it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub device: DeviceId,
    pub tenant: TenantId,
    pub door: Door,
    /// Server receive time, Unix nanoseconds. Rows without their own timestamp get this one.
    pub received_at_ns: i64,
}
