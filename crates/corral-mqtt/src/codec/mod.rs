//! The MQTT wire format, pure and I/O-free: packets of MQTT 3.1.1 and 5.0, their properties and
//! reason codes, an incremental decoder that validates strictly and an encoder.

mod decode;
mod encode;
mod packet;
mod properties;
mod reason;
pub(crate) mod wire;

#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod tests;

pub use decode::{decode_packet, frame_len, parse, peek_connect_level};
pub use encode::{encode_packet, packet_len};
pub use packet::*;
pub use properties::{Properties, PropertyContext};
pub use reason::ReasonCode;
pub use wire::{MAX_VARINT, decode_varint, varint_len};
