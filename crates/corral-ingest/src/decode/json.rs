//! JSON telemetry: an object of fields, or an array of such objects. Rules: see [`super`].

use super::time::{self, TimeError};
use super::{Json, Limits, check_field_name, check_string, parse_body, quoted};
use corral_model::{Batch, FieldValue, Row, TableName, WireError};
use std::collections::HashSet;

/// JSON telemetry: an object of fields, or an array of such objects (one row each).
///
/// `received_at_ns` is the time of rows without `ts`. All or nothing: any bad message fails the
/// whole body with a [`WireError::bad_input`] naming the message (from 1) and field.
pub fn decode_json(
    body: &[u8],
    device: &str,
    table: &TableName,
    received_at_ns: i64,
    limits: &Limits,
) -> Result<Batch, WireError> {
    decode_json_document(parse_body(body)?, device, table, received_at_ns, limits)
}

/// [`decode_json`] of a document already parsed (from JSON or CBOR).
pub(crate) fn decode_json_document(
    document: Json,
    device: &str,
    table: &TableName,
    received_at_ns: i64,
    limits: &Limits,
) -> Result<Batch, WireError> {
    let messages = match document {
        Json::Object(members) => vec![Json::Object(members)],
        Json::Array(items) if items.is_empty() => {
            return Err(WireError::bad_input("body is an empty array: no messages"));
        }
        Json::Array(items) => items,
        other => {
            return Err(WireError::bad_input(format!("body must be an object or an array of objects, got {}", other.kind())));
        }
    };
    if messages.len() > limits.max_rows {
        return Err(WireError::bad_input(format!("body has {} messages, over the limit of {}", messages.len(), limits.max_rows)));
    }
    let mut batch = Batch::new(table.clone());
    batch.rows.reserve(messages.len());
    for (i, message) in messages.into_iter().enumerate() {
        let number = i + 1;
        let Json::Object(members) = message else {
            return Err(WireError::bad_input(format!("message {number}: must be an object, got {}", message.kind())));
        };
        // Messages without `ts` get the receive time, one nanosecond apart: readings sent
        // together stay distinct points (a repeated point overwrites the first, see the store).
        let received = received_at_ns.saturating_add(i as i64);
        let row = decode_message(members, device, received, limits).map_err(|e| WireError::bad_input(e.placed(number)))?;
        batch.rows.push(row);
    }
    Ok(batch)
}

/// What went wrong in one message, before the message number is known to the text.
enum MessageError {
    /// Goes after `message N: `.
    Inside(String),
    /// A whole sentence about the message: `message N <this>`.
    Whole(&'static str),
}

impl MessageError {
    fn placed(self, number: usize) -> String {
        match self {
            MessageError::Inside(what) => format!("message {number}: {what}"),
            MessageError::Whole(what) => format!("message {number} {what}"),
        }
    }
}

impl From<String> for MessageError {
    fn from(what: String) -> Self {
        MessageError::Inside(what)
    }
}

fn decode_message(members: Vec<(String, Json)>, device: &str, received_at_ns: i64, limits: &Limits) -> Result<Row, MessageError> {
    let mut time_ns = None;
    let mut seen_ts = false;
    let mut fields = Fields { row: Row::new(received_at_ns, device), seen: HashSet::new(), limits };
    for (key, value) in members {
        if key == "ts" {
            if seen_ts {
                return Err(MessageError::Inside("\"ts\" appears more than once".into()));
            }
            seen_ts = true;
            time_ns = ts_to_ns(&value).map_err(|why| format!("\"ts\" {why}"))?;
        } else {
            fields.add("", key, value)?;
        }
    }
    let mut row = fields.row;
    if row.fields.is_empty() {
        return Err(MessageError::Whole("has no fields"));
    }
    row.time_ns = time_ns.unwrap_or(received_at_ns);
    Ok(row)
}

/// `ts` to nanoseconds; `None` for `null`. The error text goes after `"ts" `.
fn ts_to_ns(value: &Json) -> Result<Option<i64>, String> {
    let converted = match value {
        Json::Null => return Ok(None),
        Json::String(text) => time::rfc3339_to_ns(text),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(ms), _, _) => time::epoch_ms_to_ns(ms),
            (None, Some(_), _) => Err(TimeError::OutOfRange),
            (None, None, Some(ms)) => time::epoch_ms_f64_to_ns(ms),
            (None, None, None) => Err(TimeError::OutOfRange),
        },
        other => {
            return Err(format!("must be an RFC 3339 string or Unix epoch milliseconds, got {}", other.kind()));
        }
    };
    converted.map(Some).map_err(|e| format!("is not a usable time: {e}"))
}

/// The fields of one message being flattened.
struct Fields<'a> {
    row: Row,
    seen: HashSet<String>,
    limits: &'a Limits,
}

impl Fields<'_> {
    /// Adds member `key` of the object at `prefix` ("" at the top level), recursing into objects.
    fn add(&mut self, prefix: &str, key: String, value: Json) -> Result<(), String> {
        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if key.is_empty() && !prefix.is_empty() {
            return Err(format!("field {}: empty key in a nested object", quoted(&name)));
        }
        if name.len() > self.limits.max_name_bytes || name.is_empty() {
            // Nested names only grow: fail before descending.
            return check_field_name(&name, self.limits);
        }
        match value {
            Json::Object(members) => {
                for (k, v) in members {
                    self.add(&name, k, v)?;
                }
                Ok(())
            }
            Json::Null => check_field_name(&name, self.limits),
            Json::Bool(b) => self.push(name, FieldValue::Bool(b)),
            Json::Number(n) => match n.as_f64() {
                Some(x) => self.push(name, FieldValue::Float(x)),
                None => Err(format!("field {}: number out of range", quoted(&name))),
            },
            Json::String(s) => {
                check_string(&name, &s, self.limits)?;
                self.push(name, FieldValue::Str(s))
            }
            array @ Json::Array(_) => {
                let text = serde_json::to_string(&array).map_err(|e| format!("field {}: {e}", quoted(&name)))?;
                check_string(&name, &text, self.limits)?;
                self.push(name, FieldValue::Str(text))
            }
        }
    }

    fn push(&mut self, name: String, value: FieldValue) -> Result<(), String> {
        check_field_name(&name, self.limits)?;
        if self.seen.contains(&name) {
            return Err(format!("field {}: appears more than once (names must be unique after flattening)", quoted(&name)));
        }
        if self.row.fields.len() >= self.limits.max_fields_per_row {
            return Err(format!("over the limit of {} fields per message", self.limits.max_fields_per_row));
        }
        self.seen.insert(name.clone());
        self.row.fields.push((name, value));
        Ok(())
    }
}
