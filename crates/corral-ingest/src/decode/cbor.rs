//! CBOR telemetry (RFC 8949) and SenML CBOR (RFC 8428 §6): the same documents as their JSON
//! twins, in the binary form constrained devices prefer (CoAP content formats 60 and 112).
//!
//! Both are read into the order-keeping [`Json`] tree and handed to the JSON decoders, so every
//! rule (flattening, `ts`, base fields, limits) and every error message is the same whichever
//! encoding a device chose. What CBOR adds:
//! - map keys must be text strings (SenML CBOR: the RFC's integer labels, or text);
//! - byte strings are only meaningful as SenML `vd` (label 8), which JSON carries as base64url:
//!   they become that text;
//! - tags are looked through (a tagged date stays its inner text or number), `undefined` is null,
//!   and integers beyond ±2^64 or non-finite floats are refused.

use super::json::decode_json_document;
use super::senml::decode_senml_document;
use super::{Json, Limits};
use ciborium::value::Value;
use corral_model::{Batch, TableName, WireError};

/// CBOR telemetry: a map of fields, or an array of such maps — [`super::decode_json`]'s rules.
pub fn decode_cbor(
    body: &[u8],
    device: &str,
    table: &TableName,
    received_at_ns: i64,
    limits: &Limits,
) -> Result<Batch, WireError> {
    let document = to_json(parse(body)?, &Labels::Text).map_err(WireError::bad_input)?;
    decode_json_document(document, device, table, received_at_ns, limits)
}

/// SenML CBOR pack (RFC 8428 §6, integer labels) — [`super::decode_senml_json`]'s rules.
pub fn decode_senml_cbor(
    body: &[u8],
    device: &str,
    table: &TableName,
    received_at_ns: i64,
    limits: &Limits,
) -> Result<Batch, WireError> {
    let document = to_json(parse(body)?, &Labels::Senml).map_err(WireError::bad_input)?;
    decode_senml_document(document, device, table, received_at_ns, limits)
}

fn parse(body: &[u8]) -> Result<Value, WireError> {
    let mut reader = body;
    let value: Value =
        ciborium::de::from_reader(&mut reader).map_err(|e| WireError::bad_input(format!("invalid CBOR: {}", describe(&e))))?;
    if !reader.is_empty() {
        let at = body.len() - reader.len();
        return Err(WireError::bad_input(format!("invalid CBOR: {} bytes after the end of the item at byte {at}", reader.len())));
    }
    Ok(value)
}

fn describe(e: &ciborium::de::Error<std::io::Error>) -> String {
    match e {
        ciborium::de::Error::Io(_) => "the body ends in the middle of an item".into(),
        ciborium::de::Error::Syntax(at) => format!("malformed item at byte {at}"),
        ciborium::de::Error::Semantic(Some(at), what) => format!("{what} at byte {at}"),
        ciborium::de::Error::Semantic(None, what) => what.clone(),
        ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".into(),
    }
}

/// How map keys are read: text only, or SenML's integer labels as well.
enum Labels {
    Text,
    Senml,
}

impl Labels {
    fn key(&self, key: Value) -> Result<String, String> {
        match (self, key) {
            (_, Value::Text(text)) => Ok(text),
            (Labels::Senml, Value::Integer(label)) => {
                let label = i128::from(label);
                senml_label(label).map(str::to_owned).ok_or_else(|| format!("unknown SenML label {label}"))
            }
            (Labels::Text, other) => Err(format!("map keys must be text strings, got {}", kind(&other))),
            (Labels::Senml, other) => Err(format!("SenML labels must be integers or text, got {}", kind(&other))),
        }
    }
}

/// RFC 8428 Table 6: the CBOR labels of the SenML fields.
fn senml_label(label: i128) -> Option<&'static str> {
    Some(match label {
        -1 => "bver",
        -2 => "bn",
        -3 => "bt",
        -4 => "bu",
        -5 => "bv",
        -6 => "bs",
        0 => "n",
        1 => "u",
        2 => "v",
        3 => "vs",
        4 => "vb",
        5 => "s",
        6 => "t",
        7 => "ut",
        8 => "vd",
        _ => return None,
    })
}

fn to_json(value: Value, labels: &Labels) -> Result<Json, String> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(b),
        Value::Integer(i) => {
            let i = i128::from(i);
            if let Ok(i) = i64::try_from(i) {
                Json::Number(i.into())
            } else if let Ok(u) = u64::try_from(i) {
                Json::Number(u.into())
            } else {
                return Err(format!("integer {i} is out of range"));
            }
        }
        Value::Float(x) => Json::Number(serde_json::Number::from_f64(x).ok_or_else(|| format!("number {x} is not finite"))?),
        Value::Text(text) => Json::String(text),
        Value::Bytes(bytes) => Json::String(base64url(&bytes)),
        Value::Array(items) => Json::Array(items.into_iter().map(|v| to_json(v, labels)).collect::<Result<_, _>>()?),
        Value::Map(entries) => Json::Object(
            entries.into_iter().map(|(k, v)| Ok((labels.key(k)?, to_json(v, labels)?))).collect::<Result<_, String>>()?,
        ),
        Value::Tag(_, inner) => to_json(*inner, labels)?,
        _ => Json::Null,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "an integer",
        Value::Bytes(_) => "a byte string",
        Value::Float(_) => "a float",
        Value::Text(_) => "a text string",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Tag(..) => "a tagged item",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "an unknown item",
    }
}

/// Base64url without padding (RFC 4648 §5): how SenML JSON carries `vd` (RFC 8428 §4.3).
fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::FieldValue;

    const NOW: i64 = 1_795_255_200_000_000_000;

    fn cbor(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(value, &mut out).unwrap();
        out
    }

    fn map(entries: Vec<(Value, Value)>) -> Value {
        Value::Map(entries)
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn cbor_telemetry_follows_the_json_rules() {
        let body = cbor(&map(vec![
            (text("ts"), Value::Integer(1_795_255_200_000i64.into())),
            (text("temperature"), Value::Float(21.5)),
            (text("gps"), map(vec![(text("lat"), Value::Integer(52.into()))])),
            (text("door_open"), Value::Bool(false)),
        ]));
        let batch = decode_cbor(&body, "reefer-1", &TableName::telemetry(), 0, &Limits::default()).unwrap();
        let row = &batch.rows[0];
        assert_eq!(row.time_ns, NOW);
        let names: Vec<_> = row.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["temperature", "gps.lat", "door_open"]);
        assert_eq!(row.fields[1].1, FieldValue::Float(52.0));
    }

    #[test]
    fn senml_cbor_uses_the_rfc_labels() {
        // RFC 8428 §6 example shape: base name, base time, two records.
        let body = cbor(&Value::Array(vec![
            map(vec![
                (Value::Integer((-2).into()), text("urn:dev:ow:10e2073a0108006:")),
                (Value::Integer((-3).into()), Value::Float(1.276020076001e9)),
                (Value::Integer(0.into()), text("voltage")),
                (Value::Integer(2.into()), Value::Float(120.1)),
            ]),
            map(vec![(Value::Integer(0.into()), text("blob")), (Value::Integer(8.into()), Value::Bytes(vec![0xfb, 0xff, 0x00]))]),
        ]));
        let batch = decode_senml_cbor(&body, "meter-1", &TableName::telemetry(), NOW, &Limits::default()).unwrap();
        let row = &batch.rows[0];
        assert_eq!(row.time_ns, 1_276_020_076_001_000_000);
        assert_eq!(row.fields[0], ("urn:dev:ow:10e2073a0108006:voltage".into(), FieldValue::Float(120.1)));
        assert_eq!(row.fields[1], ("urn:dev:ow:10e2073a0108006:blob".into(), FieldValue::Str("-_8A".into())));
    }

    #[test]
    fn bad_cbor_is_refused_with_the_reason() {
        let message = |body: &[u8], senml: bool| {
            let decode = if senml { decode_senml_cbor } else { decode_cbor };
            decode(body, "d", &TableName::telemetry(), NOW, &Limits::default()).unwrap_err().message
        };
        assert_eq!(message(&[0xa1, 0x61], false), "invalid CBOR: the body ends in the middle of an item");
        assert_eq!(message(&[0xa1, 0x01, 0x02], false), "map keys must be text strings, got an integer");
        assert_eq!(
            message(&cbor(&Value::Array(vec![map(vec![(Value::Integer(99.into()), Value::Null)])])), true),
            "unknown SenML label 99"
        );
        assert!(message(&[0xa0, 0x00], false).contains("1 bytes after the end of the item at byte 1"));
        assert_eq!(
            message(&cbor(&Value::Integer(3.into())), false),
            "body must be an object or an array of objects, got a number"
        );
        // 10,000 nested arrays: refused, not a stack overflow.
        assert_eq!(message(&[0x81; 10_000], false), "invalid CBOR: nested too deeply");
    }

    #[test]
    fn base64url_has_no_padding() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
    }
}
