//! SenML JSON (RFC 8428) packs from one device. Rules: see [`super`].

use super::time;
use super::{Json, Limits, check_field_name, check_string, parse_body, quoted};
use corral_model::{Batch, FieldValue, Row, TableName, WireError};
use std::collections::{HashMap, HashSet};

/// 2^28 seconds in nanoseconds: resolved times below it are relative to "now" (RFC 8428 §4.5.3).
const RELATIVE_BELOW_NS: i64 = (1 << 28) * 1_000_000_000;
/// The highest SenML version understood (RFC 8428 is version 10).
const MAX_VERSION: u64 = 10;

/// SenML JSON (RFC 8428) pack from one device.
///
/// Records with the same resolved time become one row. `received_at_ns` is "now" for relative
/// and absent times. All or nothing: any bad record fails the whole pack with a
/// [`WireError::bad_input`] naming the record (from 1).
pub fn decode_senml_json(
    body: &[u8],
    device: &str,
    table: &TableName,
    received_at_ns: i64,
    limits: &Limits,
) -> Result<Batch, WireError> {
    decode_senml_document(parse_body(body)?, device, table, received_at_ns, limits)
}

/// [`decode_senml_json`] of a pack already parsed (from JSON, or CBOR with its labels named).
pub(crate) fn decode_senml_document(
    document: Json,
    device: &str,
    table: &TableName,
    received_at_ns: i64,
    limits: &Limits,
) -> Result<Batch, WireError> {
    let records = match document {
        Json::Array(items) if items.is_empty() => {
            return Err(WireError::bad_input("SenML pack is an empty array: no records"));
        }
        Json::Array(items) => items,
        other => {
            return Err(WireError::bad_input(format!("SenML pack must be an array of records, got {}", other.kind())));
        }
    };
    let mut base = Base::default();
    let mut pack = Pack { rows: Vec::new(), by_time: HashMap::new(), device, limits };
    for (i, record) in records.into_iter().enumerate() {
        decode_record(record, &mut base, &mut pack, received_at_ns)
            .map_err(|what| WireError::bad_input(format!("record {}: {what}", i + 1)))?;
    }
    let mut batch = Batch::new(table.clone());
    batch.rows = pack.rows.into_iter().map(|(row, _)| row).collect();
    Ok(batch)
}

/// Base fields in force: set by a record, they apply to it and every later record.
#[derive(Default)]
struct Base {
    name: String,
    time_ns: i64,
    value: f64,
    sum: f64,
}

/// One record's own fields, before resolution.
#[derive(Default)]
struct Record {
    name: Option<String>,
    time_ns: i64,
    v: Option<f64>,
    vs: Option<String>,
    vb: Option<bool>,
    vd: Option<String>,
    s: Option<f64>,
}

/// Rows so far, one per distinct resolved time, in order of first appearance.
struct Pack<'a> {
    rows: Vec<(Row, HashSet<String>)>,
    by_time: HashMap<i64, usize>,
    device: &'a str,
    limits: &'a Limits,
}

/// Reads one record, updating `base`, and adds its fields to `pack`. The error text goes after
/// `record N: `.
fn decode_record(record: Json, base: &mut Base, pack: &mut Pack, received_at_ns: i64) -> Result<(), String> {
    let Json::Object(members) = record else {
        return Err(format!("must be an object, got {}", record.kind()));
    };
    let mut keys = HashSet::with_capacity(members.len());
    if let Some((key, _)) = members.iter().find(|(k, _)| !keys.insert(k.as_str())) {
        return Err(format!("key {} appears more than once", quoted(key)));
    }
    let mut r = Record::default();
    for (key, value) in members {
        match key.as_str() {
            "bn" => base.name = string(value, "base name \"bn\"")?,
            "bt" => base.time_ns = seconds(&value, "base time \"bt\"")?,
            "bu" => {
                string(value, "base unit \"bu\"")?;
            }
            "bv" => base.value = number(&value, "base value \"bv\"")?,
            "bs" => base.sum = number(&value, "base sum \"bs\"")?,
            "bver" => version(&value)?,
            "n" => r.name = Some(string(value, "name \"n\"")?),
            "t" => r.time_ns = seconds(&value, "time \"t\"")?,
            "u" => {
                string(value, "unit \"u\"")?;
            }
            "v" => r.v = Some(number(&value, "value \"v\"")?),
            "vs" => r.vs = Some(string(value, "string value \"vs\"")?),
            "vb" => r.vb = Some(boolean(&value, "boolean value \"vb\"")?),
            "vd" => r.vd = Some(data(value)?),
            "s" => r.s = Some(number(&value, "sum \"s\"")?),
            "ut" => {
                number(&value, "update time \"ut\"")?;
            }
            other if other.ends_with('_') => {
                return Err(format!("field {} must be understood (RFC 8428 §4.4) and is not supported", quoted(other)));
            }
            _ => {} // Unknown keys without the `_` suffix may be ignored (§4.4).
        }
    }

    let name = format!("{}{}", base.name, r.name.as_deref().unwrap_or(""));
    if name.is_empty() {
        return Err("empty name: neither \"bn\" nor \"n\" gives one".into());
    }
    check_senml_name(&name)?;
    let time_ns = resolve_time(base.time_ns, r.time_ns, received_at_ns)?;

    let given: Vec<&str> =
        [("\"v\"", r.v.is_some()), ("\"vs\"", r.vs.is_some()), ("\"vb\"", r.vb.is_some()), ("\"vd\"", r.vd.is_some())]
            .into_iter()
            .filter_map(|(key, present)| present.then_some(key))
            .collect();
    if given.len() > 1 {
        return Err(format!("field {}: more than one value ({}); a record carries one", quoted(&name), given.join(", ")));
    }
    let value = if let Some(v) = r.v {
        Some(FieldValue::Float(finite(v + base.value, &name, "value")?))
    } else if let Some(text) = r.vs.or(r.vd) {
        check_string(&name, &text, pack.limits)?;
        Some(FieldValue::Str(text))
    } else {
        r.vb.map(FieldValue::Bool)
    };
    let sum = r.s.map(|s| finite(s + base.sum, &name, "sum")).transpose()?;
    let sum_name = format!("{name}.sum");
    match (value, sum) {
        (None, None) => {
            Err(format!("field {}: no value (one of \"v\", \"vs\", \"vb\", \"vd\" or a sum \"s\" is required)", quoted(&name)))
        }
        (value, sum) => {
            if let Some(value) = value {
                pack.push(time_ns, name, value)?;
            }
            if let Some(sum) = sum {
                pack.push(time_ns, sum_name, FieldValue::Float(sum))?;
            }
            Ok(())
        }
    }
}

impl Pack<'_> {
    fn push(&mut self, time_ns: i64, name: String, value: FieldValue) -> Result<(), String> {
        check_field_name(&name, self.limits)?;
        let index = match self.by_time.get(&time_ns) {
            Some(&index) => index,
            None => {
                if self.rows.len() >= self.limits.max_rows {
                    return Err(format!("over the limit of {} rows (distinct times) per pack", self.limits.max_rows));
                }
                self.rows.push((Row::new(time_ns, self.device), HashSet::new()));
                self.by_time.insert(time_ns, self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        let (row, seen) = &mut self.rows[index];
        if seen.contains(&name) {
            return Err(format!("field {}: repeated at the same time (an earlier record has this name and time)", quoted(&name)));
        }
        if row.fields.len() >= self.limits.max_fields_per_row {
            return Err(format!(
                "over the limit of {} fields per row (records with the same time)",
                self.limits.max_fields_per_row
            ));
        }
        seen.insert(name.clone());
        row.fields.push((name, value));
        Ok(())
    }
}

/// `bt` + `t`; below 2^28 s (RFC 8428 §4.5.3) relative to the receive time.
fn resolve_time(base_ns: i64, offset_ns: i64, received_at_ns: i64) -> Result<i64, String> {
    let out_of_range = || format!("time: {}", time::TimeError::OutOfRange);
    let resolved = base_ns.checked_add(offset_ns).ok_or_else(out_of_range)?;
    if resolved < RELATIVE_BELOW_NS { received_at_ns.checked_add(resolved).ok_or_else(out_of_range) } else { Ok(resolved) }
}

/// RFC 8428 §4.5.1: `[A-Za-z0-9][A-Za-z0-9:./_-]*`.
fn check_senml_name(name: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'.' | b'/' | b'_');
    let bytes = name.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() || !bytes.iter().all(|&b| allowed(b)) {
        return Err(format!(
            "field {}: invalid SenML name (RFC 8428 §4.5.1: letters, digits and - : . / _, \
             starting with a letter or digit)",
            quoted(name)
        ));
    }
    Ok(())
}

fn string(value: Json, what: &str) -> Result<String, String> {
    match value {
        Json::String(s) => Ok(s),
        other => Err(format!("{what} must be a string, got {}", other.kind())),
    }
}

fn number(value: &Json, what: &str) -> Result<f64, String> {
    match value {
        Json::Number(n) => n.as_f64().ok_or_else(|| format!("{what} is out of range")),
        other => Err(format!("{what} must be a number, got {}", other.kind())),
    }
}

fn boolean(value: &Json, what: &str) -> Result<bool, String> {
    match value {
        Json::Bool(b) => Ok(*b),
        other => Err(format!("{what} must be a boolean, got {}", other.kind())),
    }
}

fn seconds(value: &Json, what: &str) -> Result<i64, String> {
    time::seconds_f64_to_ns(number(value, what)?).map_err(|e| format!("{what}: {e}"))
}

fn finite(x: f64, name: &str, what: &str) -> Result<f64, String> {
    if x.is_finite() { Ok(x) } else { Err(format!("field {}: {what} is out of range after adding the base", quoted(name))) }
}

fn version(value: &Json) -> Result<(), String> {
    let what = "base version \"bver\"";
    let v = match value {
        Json::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && (1.0..1e15).contains(f)).map(|f| f as u64))
        }
        _ => None,
    };
    match v {
        Some(v) if v > MAX_VERSION => Err(format!("{what} is {v}; this server understands SenML up to version {MAX_VERSION}")),
        Some(v) if v >= 1 => Ok(()),
        _ => match value {
            Json::Number(n) => Err(format!("{what} must be a positive integer, got {n}")),
            other => Err(format!("{what} must be a positive integer, got {}", other.kind())),
        },
    }
}

/// `vd` must look like base64 (standard or URL-safe alphabet, optional padding); kept as sent.
fn data(value: Json) -> Result<String, String> {
    let what = "data value \"vd\"";
    let text = string(value, what)?;
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
    let ok = body.bytes().all(alphabet) && body.len() % 4 != 1 && (padding == 0 || (padding <= 2 && text.len() % 4 == 0));
    if ok { Ok(text) } else { Err(format!("{what} must be base64 text")) }
}
