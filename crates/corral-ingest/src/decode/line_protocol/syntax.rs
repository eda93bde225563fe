//! Line protocol at the byte level: scanning with escapes, and field values and timestamps.
//! Every function works on one line (no newline inside); error texts go after `line N: `.

use super::Precision;
use crate::decode::quoted;
use corral_model::FieldValue;
use std::borrow::Cow;

/// Whether `c` ends a token: `,` and space everywhere, also `=` in keys and tag values (`KEY`).
/// These are exactly the characters a backslash escapes there.
#[inline]
fn is_special<const KEY: bool>(c: u8) -> bool {
    c == b',' || c == b' ' || (KEY && c == b'=')
}

/// The index of the first unescaped special byte from `i` (or the end), and whether any escape
/// was passed on the way.
#[inline]
pub(super) fn scan<const KEY: bool>(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut escaped = false;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            if i + 1 < b.len() && is_special::<KEY>(b[i + 1]) {
                escaped = true;
                i += 2;
                continue;
            }
        } else if is_special::<KEY>(c) {
            return (i, escaped);
        }
        i += 1;
    }
    (i, escaped)
}

/// `raw` without its escaping backslashes; borrowed when `scan` saw no escape.
pub(super) fn unescape<const KEY: bool>(raw: &str, escaped: bool) -> Cow<'_, str> {
    if !escaped {
        return Cow::Borrowed(raw);
    }
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let (mut from, mut i) = (0, 0);
    while i + 1 < b.len() {
        if b[i] == b'\\' && is_special::<KEY>(b[i + 1]) {
            out.push_str(&raw[from..i]);
            from = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    out.push_str(&raw[from..]);
    Cow::Owned(out)
}

/// A tag or field key starting at `start`, and the index of its `=`.
pub(super) fn key_at<'a>(line: &'a str, start: usize, what: &str) -> Result<(Cow<'a, str>, usize), String> {
    let b = line.as_bytes();
    let (end, escaped) = scan::<true>(b, start);
    let key = unescape::<true>(&line[start..end], escaped);
    match b.get(end) {
        Some(b'=') if key.is_empty() => Err(format!("{what} with an empty key")),
        Some(b'=') => Ok((key, end)),
        _ if key.is_empty() && start > 0 && b[start - 1] == b',' => Err(format!("missing {what} after \",\"")),
        _ if key.is_empty() => Err(format!("expected a {what} as key=value")),
        _ => Err(format!("{what} {}: missing \"=\" and value", quoted(&key))),
    }
}

/// A string field value from just after its opening quote: the text and the index after the
/// closing quote, or `None` if the line ends first.
pub(super) fn string_at(line: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let b = line.as_bytes();
    let (mut owned, mut from, mut i) = (None::<String>, start, start);
    while i < b.len() {
        match b[i] {
            b'"' => {
                let text = match owned {
                    None => Cow::Borrowed(&line[start..i]),
                    Some(mut out) => {
                        out.push_str(&line[from..i]);
                        Cow::Owned(out)
                    }
                };
                return Some((text, i + 1));
            }
            b'\\' if matches!(b.get(i + 1), Some(b'"' | b'\\')) => {
                owned.get_or_insert_with(String::new).push_str(&line[from..i]);
                from = i + 1;
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// The index of the first byte from `i` that is not a space or tab (or the end).
pub(super) fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// A field value other than a string: float, `i` integer, `u` unsigned or boolean.
pub(super) fn value(text: &str, key: &str) -> Result<FieldValue, String> {
    let b = text.as_bytes();
    let out_of_range = |why: &str| format!("field value for {} out of range: {} ({why})", quoted(key), quoted(text));
    match b.last() {
        None => return Err(format!("missing value for field {}", quoted(key))),
        Some(b'i') => match parse_i64(&b[..b.len() - 1]) {
            Ok(x) => return Ok(FieldValue::Int(x)),
            Err(true) => return Err(out_of_range("integers with i are 64-bit signed")),
            Err(false) => {}
        },
        Some(b'u') => match parse_u64(&b[..b.len() - 1]) {
            Ok(x) => return Ok(FieldValue::UInt(x)),
            Err(true) => return Err(out_of_range("unsigned values with u are 64-bit")),
            Err(false) => {}
        },
        _ => {}
    }
    match text {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Bool(false)),
        _ => {}
    }
    let numeric = matches!(b[0], b'0'..=b'9' | b'-' | b'.')
        && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'));
    if numeric && let Ok(x) = text.parse::<f64>() {
        return if x.is_finite() { Ok(FieldValue::Float(x)) } else { Err(out_of_range("floats are 64-bit")) };
    }
    Err(format!(
        "invalid field value for {}: {} (expected a number, an integer with i, an unsigned with \
         u, a boolean, or a double-quoted string)",
        quoted(key),
        quoted(text)
    ))
}

/// A timestamp in `precision` units to nanoseconds.
pub(super) fn timestamp(text: &str, precision: Precision) -> Result<i64, String> {
    match parse_i64(text.as_bytes()) {
        Ok(x) => x.checked_mul(precision.nanos()),
        Err(true) => None,
        Err(false) => {
            return Err(format!("invalid timestamp {} (expected an integer)", quoted(text)));
        }
    }
    .ok_or_else(|| format!("timestamp {} out of range for precision {}", quoted(text), precision.as_str()))
}

/// `-?[0-9]+` as `i64`; `Err(true)` when well-formed but out of range, `Err(false)` otherwise.
fn parse_i64(b: &[u8]) -> Result<i64, bool> {
    match b.split_first() {
        Some((b'-', digits)) => 0i64.checked_sub_unsigned(parse_u64(digits)?).ok_or(true),
        _ => i64::try_from(parse_u64(b)?).map_err(|_| true),
    }
}

/// `[0-9]+` as `u64`; `Err(true)` when well-formed but out of range, `Err(false)` otherwise.
fn parse_u64(b: &[u8]) -> Result<u64, bool> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return Err(false);
    }
    b.iter().try_fold(0u64, |n, &c| n.checked_mul(10)?.checked_add(u64::from(c - b'0'))).ok_or(true)
}
