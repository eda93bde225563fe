//! Telemetry decoders: a device's bytes in, [`corral_model::Batch`]es out.
//!
//! All decoders are pure (no I/O, no clock: the caller passes the receive time) and atomic: a bad
//! element anywhere fails the whole body with [`WireError::bad_input`] and nothing is stored.
//! Error messages name where the problem is (`message 3: field "gps.lat": ...`,
//! `record 2: base name "bn" must be a string`, `invalid JSON at line 1 column 17: ...`);
//! messages and records are numbered from 1. Every row gets the given device, no tags, and its
//! fields in document order.
//!
//! # JSON telemetry ([`decode_json`])
//! The body is one JSON object of fields, or a non-empty array of such objects (one row each).
//! - `ts` (top level only) is the row's time: an RFC 3339 string with any offset (converted to
//!   UTC), or a number of Unix epoch milliseconds, integer or fractional (fractional digits are
//!   kept to the nanosecond, within the precision of a JSON double). Absent or `null`: the
//!   server's receive time.
//! - Numbers become float fields (always, so `3` and `3.5` never conflict), booleans boolean
//!   fields, strings string fields. `null` omits the field.
//! - Nested objects flatten with `.`: `{"gps":{"lat":1}}` gives the field `gps.lat`.
//! - An array value is stored as a string field holding the array's compact JSON text:
//!   `{"xs":[1, 2]}` gives `xs = "[1,2]"`.
//! - Field names are non-empty (no empty key at any nesting level) and at most
//!   [`Limits::max_name_bytes`] bytes after flattening. `time` and `device` are reserved (every
//!   row has those columns). A name may appear once per message after flattening, so
//!   `{"a.b":1,"a":{"b":2}}` is rejected, as is a repeated key.
//! - A message without any field (e.g. only `ts`, or only nulls) is rejected, as is an empty
//!   array, an array element that is not an object, or a top level that is neither.
//!
//! # SenML JSON ([`decode_senml_json`], RFC 8428)
//! The body is a non-empty JSON array of record objects, all from the one device.
//! - Base fields `bn`, `bt`, `bu`, `bv`, `bs`, `bver` apply to their own record and every later
//!   one until changed. Base and record fields must have their RFC types (e.g. `bn` a string).
//! - The field name is `bn` + `n`; it must be non-empty, follow RFC 8428 §4.5.1 (letters,
//!   digits, `-` `:` `.` `/` `_`, starting with a letter or digit) and the JSON field-name rules
//!   above (`time` and `device` reserved, length limit).
//! - Time is `bt` + `t` in seconds (may be fractional). A resolved time below 2^28 (including
//!   zero, absent and negative values) is relative to the receive time, per RFC 8428 §4.5.3.
//! - Values: `v` (+ `bv`) gives a float field, `vs` a string, `vb` a boolean, `vd` a string
//!   holding the base64 text as sent (it must look like base64). At most one of them per record.
//!   A sum `s` (+ `bs`) gives a float field named `<name>.sum`. A record with neither a value nor
//!   a sum is rejected. Units (`u`, `bu`) and `ut` are type-checked but not stored.
//! - `bver` above 10 is rejected. Unknown keys ending in `_` are "must understand" (§4.4) and
//!   rejected; other unknown keys are ignored.
//! - Records with the same resolved time are merged into one row (fields in record order, rows
//!   in order of first appearance); the same name twice at the same time is rejected.
//!
//! # CBOR and SenML CBOR ([`decode_cbor`], [`decode_senml_cbor`])
//! The same documents in CBOR (RFC 8949; SenML with the integer labels of RFC 8428 §6), read by
//! the rules above with the same messages; see the `cbor` module for what CBOR adds.
//!
//! # InfluxDB line protocol ([`decode_line_protocol`])
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`, one point per line, with
//! InfluxDB's escaping, `i`/`u` integer suffixes, booleans, quoted strings and a timestamp in the
//! given [`Precision`]. Each measurement is a table (one batch each); the row's device is the value
//! of the chosen device tag (consumed, not kept as a tag column) or the writer's own identity.
//! Errors start with the 1-based line number. See the `line_protocol` module for every rule.
//!
//! # Limits
//! [`Limits`] bound fields per row, rows per body, string value size and field name size; going
//! over is bad input naming the limit.

mod cbor;
mod json;
mod line_protocol;
mod senml;
pub mod time;

#[cfg(test)]
mod tests_fuzz;
#[cfg(test)]
mod tests_json;
#[cfg(test)]
mod tests_senml;

pub use cbor::{decode_cbor, decode_senml_cbor};
pub use json::decode_json;
pub use line_protocol::{Precision, decode_line_protocol};
pub use senml::decode_senml_json;

use corral_model::{Batch, TableName, WireError};

/// The telemetry formats a device may send as one message (HTTP body, MQTT payload, CoAP
/// payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryFormat {
    Json,
    SenmlJson,
    Cbor,
    SenmlCbor,
}

impl TelemetryFormat {
    /// By media type (parameters allowed): `application/senml+json`, `application/cbor`,
    /// `application/senml+cbor`; JSON otherwise.
    pub fn from_content_type(content_type: &str) -> TelemetryFormat {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/senml+json" => TelemetryFormat::SenmlJson,
            "application/cbor" => TelemetryFormat::Cbor,
            "application/senml+cbor" => TelemetryFormat::SenmlCbor,
            _ => TelemetryFormat::Json,
        }
    }

    /// By CoAP Content-Format number (RFC 7252 §12.3): JSON 50, CBOR 60, SenML JSON 110, SenML
    /// CBOR 112; `None` for any other.
    pub fn from_coap_content_format(number: u16) -> Option<TelemetryFormat> {
        match number {
            50 => Some(TelemetryFormat::Json),
            60 => Some(TelemetryFormat::Cbor),
            110 => Some(TelemetryFormat::SenmlJson),
            112 => Some(TelemetryFormat::SenmlCbor),
            _ => None,
        }
    }

    /// Decodes one message of this format into a batch for `table` (see [`decode_json`],
    /// [`decode_senml_json`], [`decode_cbor`], [`decode_senml_cbor`]).
    pub fn decode(
        self,
        body: &[u8],
        device: &str,
        table: &TableName,
        received_at_ns: i64,
        limits: &Limits,
    ) -> Result<Batch, WireError> {
        match self {
            TelemetryFormat::Json => decode_json(body, device, table, received_at_ns, limits),
            TelemetryFormat::SenmlJson => decode_senml_json(body, device, table, received_at_ns, limits),
            TelemetryFormat::Cbor => decode_cbor(body, device, table, received_at_ns, limits),
            TelemetryFormat::SenmlCbor => decode_senml_cbor(body, device, table, received_at_ns, limits),
        }
    }
}
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use std::fmt;

/// Bounds on what one body may contain. Exceeding one is bad input naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fields in one row (after flattening / merging). Default 1000.
    pub max_fields_per_row: usize,
    /// Rows in one body (JSON messages, SenML distinct times). Default 100 000.
    pub max_rows: usize,
    /// Bytes of one string value (including an array's JSON text and SenML `vd`). Default 64 KiB.
    pub max_string_bytes: usize,
    /// Bytes of one field name after flattening / base-name resolution. Default 256.
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_fields_per_row: 1000, max_rows: 100_000, max_string_bytes: 64 * 1024, max_name_bytes: 256 }
    }
}

/// Field names every row already has as columns.
const RESERVED_NAMES: &[&str] = &["time", "device"];

/// A parsed JSON document that keeps object members in document order, duplicates included
/// (`serde_json::Value` sorts keys and silently keeps the last duplicate).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// "a string", "an object", ... for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v).map(Json::Number).ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Parses a body, turning a syntax error into `invalid JSON at line L column C: <what>`.
pub(crate) fn parse_body(body: &[u8]) -> Result<Json, WireError> {
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        let what = text.rfind(" at line ").map_or(text.as_str(), |i| &text[..i]);
        WireError::bad_input(format!("invalid JSON at line {} column {}: {what}", e.line(), e.column()))
    })
}

/// A name quoted for an error message, shortened if long.
pub(crate) fn quoted(name: &str) -> String {
    const SHOWN: usize = 64;
    match name.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}...", &name[..cut]),
        None => format!("{name:?}"),
    }
}

/// Checks a complete field name; the error is the reason, for the caller to place.
pub(crate) fn check_field_name(name: &str, limits: &Limits) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty field name".into());
    }
    if name.len() > limits.max_name_bytes {
        return Err(format!("field {}: name is {} bytes, over the limit of {}", quoted(name), name.len(), limits.max_name_bytes));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!("field {}: name is reserved (every row has the columns \"time\" and \"device\")", quoted(name)));
    }
    Ok(())
}

/// Checks a string value against [`Limits::max_string_bytes`].
pub(crate) fn check_string(name: &str, value: &str, limits: &Limits) -> Result<(), String> {
    if value.len() > limits.max_string_bytes {
        return Err(format!(
            "field {}: string value is {} bytes, over the limit of {}",
            quoted(name),
            value.len(),
            limits.max_string_bytes
        ));
    }
    Ok(())
}
