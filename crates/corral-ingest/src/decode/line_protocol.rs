//! InfluxDB line protocol: one point per line, any number of tables (measurements) per body.
//!
//! Each line is `measurement[,tag=value...] field=value[,field=value...] [timestamp]`; sections
//! are separated by one or more spaces. Lines are separated by `\n` (a trailing `\r` is dropped);
//! spaces and tabs at the start or end of a line are ignored. Blank lines and comments (`#` as
//! the first character after optional spaces or tabs) are ignored. The body must be UTF-8.
//! All or nothing: any bad line fails the whole body with a [`WireError::bad_input`] whose
//! message starts with the line number (from 1), e.g.
//! `line 3: invalid field value for "temp": "abc" (...)`.
//!
//! - **Escaping.** A backslash escapes `,` and space in a measurement; `,` `=` and space in tag
//!   keys, tag values and field keys; `"` and `\` inside a string field value. A backslash before
//!   any other character is an ordinary character (so `a\b` is `a\b`, and `\\,` is `\` then an
//!   escaped comma).
//! - **Measurement**: the table. It must be a valid table name (1-64 of `[A-Za-z0-9._-]`, starting
//!   with a letter or digit, not a platform table), so escaped spaces and commas are accepted by
//!   the syntax but refused as a name. Rows go to one batch per table, tables in order of first
//!   appearance, rows in line order.
//! - **Tags** are strings with a non-empty key and a non-empty value (an unescaped `=` in a value
//!   is refused). **Fields** need at least one per line. Field values are floats (`21.5`,
//!   `-1.5E-3`, `1e3`, `7` — a number without suffix is a float), integers with `i` (`-3i`,
//!   64-bit signed), unsigned with `u` (`3u`, 64-bit), booleans (`t` `T` `true` `True` `TRUE`,
//!   `f` `F` `false` `False` `FALSE`) or double-quoted strings (which may hold spaces, commas and
//!   `=`; a raw newline ends the line, so a string cannot span lines).
//! - **Keys**: within a line a key may appear once among the tags, once among the fields, and not
//!   as both. `time` and `device` are reserved (every row has those columns) except for the
//!   device tag below. Key length is bounded by [`Limits::max_name_bytes`], tag and string values
//!   by [`Limits::max_string_bytes`], tags plus fields per line by
//!   [`Limits::max_fields_per_row`], lines of data per body by [`Limits::max_rows`].
//! - **Timestamp**: an optional integer (may be negative) in the request's [`Precision`], scaled
//!   to nanoseconds; a result outside `i64` nanoseconds (years 1677-2262) is refused. Without
//!   one, the row gets the receive time. Nothing may follow it on the line.
//! - **Device tag rule.** Every row belongs to a device. The tag named by `device_tag` (usually
//!   `device`) gives it; that tag becomes the row's device and is not kept as a tag. Its value
//!   must be a valid device id (1-128 of `[A-Za-z0-9._-]`). A line without that tag gets
//!   `default_device` (the device whose token wrote the body); with no default, the line is an
//!   error naming the missing tag.

mod syntax;

use super::{Limits, RESERVED_NAMES, check_field_name, check_string, quoted};
use corral_model::{Batch, DeviceId, FieldValue, Row, TableName, WireError};
use std::borrow::Cow;
use std::collections::HashMap;
use syntax::{key_at, scan, skip_spaces, string_at, timestamp, unescape, value};

#[cfg(test)]
#[path = "tests_line_protocol.rs"]
mod tests;
#[cfg(test)]
mod tests_fuzz;

/// The unit of line-protocol timestamps (the `precision` of a write request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// Accepts InfluxDB v1 names (`n`, `ns`, `u`, `us`, `µ`, `ms`, `s`, `m`, `h`) and v2 names
    /// (`ns`, `us`, `ms`, `s`); also `µs` and the Greek `μ`/`μs`.
    pub fn parse(s: &str) -> Option<Precision> {
        Some(match s {
            "n" | "ns" => Precision::Nanoseconds,
            "u" | "us" | "µ" | "µs" | "μ" | "μs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return None,
        })
    }

    /// The short name used in messages: `ns`, `us`, `ms`, `s`, `m` or `h`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
            Precision::Minutes => "m",
            Precision::Hours => "h",
        }
    }

    /// Nanoseconds in one unit.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        }
    }
}

/// Decodes a line-protocol body into one [`Batch`] per measurement (table), in first-seen order.
///
/// `device_tag`: the tag whose value becomes the row's `device` (that tag is then not kept as a
/// tag); `default_device`: the device of lines without that tag (`None`: such a line is an error
/// naming the missing tag). `received_at_ns` is the time of lines without a timestamp. A body of
/// only blank and comment lines gives no batches. The accepted syntax and the rules are in the
/// module documentation of `decode/line_protocol.rs`.
pub fn decode_line_protocol(
    body: &[u8],
    precision: Precision,
    received_at_ns: i64,
    device_tag: &str,
    default_device: Option<&str>,
    limits: &Limits,
) -> Result<Vec<Batch>, WireError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let line = 1 + body[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
        WireError::bad_input(format!("line {line}: invalid UTF-8"))
    })?;
    let mut decoder = Decoder {
        precision,
        received_at_ns,
        device_tag,
        default_device,
        limits,
        batches: Vec::new(),
        index: HashMap::new(),
        last: None,
        rows: 0,
        tags: Vec::new(),
        fields: Vec::new(),
    };
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line).trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        decoder.line(line).map_err(|what| WireError::bad_input(format!("line {}: {what}", i + 1)))?;
    }
    Ok(decoder.batches)
}

struct Decoder<'a> {
    precision: Precision,
    received_at_ns: i64,
    device_tag: &'a str,
    default_device: Option<&'a str>,
    limits: &'a Limits,
    batches: Vec<Batch>,
    /// Measurement as written → index in `batches`.
    index: HashMap<&'a str, usize>,
    last: Option<(&'a str, usize)>,
    rows: usize,
    /// The current line's tags and fields, borrowed from the body where no unescaping was needed.
    /// Reused from line to line; the row is built only once the whole line checks out.
    tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    fields: Vec<(Cow<'a, str>, FieldValue)>,
}

impl<'a> Decoder<'a> {
    /// Decodes one non-blank, non-comment line. The error text goes after `line N: `.
    fn line(&mut self, line: &'a str) -> Result<(), String> {
        let b = line.as_bytes();
        let (mut i, escaped) = scan::<false>(b, 0);
        if i == 0 {
            return Err("missing measurement".into());
        }
        let table = self.table(&line[..i], escaped)?;
        self.tags.clear();
        self.fields.clear();

        let mut device = None;
        while b.get(i) == Some(&b',') {
            let (key, equals) = key_at(line, i + 1, "tag")?;
            let (end, escaped) = scan::<true>(b, equals + 1);
            if b.get(end) == Some(&b'=') {
                return Err(format!("tag {}: unescaped \"=\" in the value (write \\=)", quoted(&key)));
            }
            if end == equals + 1 {
                return Err(format!("tag {} has an empty value", quoted(&key)));
            }
            let value = unescape::<true>(&line[equals + 1..end], escaped);
            i = end;
            if key == self.device_tag {
                if device.replace(value).is_some() {
                    return Err(format!("tag {} appears more than once", quoted(&key)));
                }
                continue;
            }
            self.check_tag(&key, &value)?;
            self.tags.push((key, value));
        }

        i = skip_spaces(b, i);
        if i == b.len() {
            return Err("missing fields".into());
        }
        loop {
            let (key, end) = key_at(line, i, "field")?;
            check_field_name(&key, self.limits)?;
            i = end + 1;
            let value = if b.get(i) == Some(&b'"') {
                let Some((text, end)) = string_at(line, i + 1) else {
                    return Err(format!("unterminated string value for field {}", quoted(&key)));
                };
                check_string(&key, &text, self.limits)?;
                i = end;
                if i < b.len() && b[i] != b',' && b[i] != b' ' {
                    return Err(format!("field {}: unexpected text after the closing quote", quoted(&key)));
                }
                FieldValue::Str(text.into_owned())
            } else {
                let end = b[i..].iter().position(|&c| c == b',' || c == b' ').map_or(b.len(), |p| i + p);
                let value = value(&line[i..end], &key)?;
                i = end;
                value
            };
            self.check_width()?;
            self.fields.push((key, value));
            if b.get(i) != Some(&b',') {
                break;
            }
            i += 1;
        }

        let time_ns = match skip_spaces(b, i) {
            start if start == b.len() => self.received_at_ns,
            start => {
                let end = b[start..].iter().position(|&c| c == b' ' || c == b'\t');
                let end = end.map_or(b.len(), |p| start + p);
                let rest = line[end..].trim_matches([' ', '\t']);
                if !rest.is_empty() {
                    return Err(format!("unexpected text after the timestamp: {}", quoted(rest)));
                }
                timestamp(&line[start..end], self.precision)?
            }
        };
        self.finish(table, device, time_ns)
    }

    /// Checks the line as a whole and appends its row to batch `table`.
    fn finish(&mut self, table: usize, device: Option<Cow<'a, str>>, time_ns: i64) -> Result<(), String> {
        if let Some(clash) = self.clash(device.is_some()) {
            return Err(clash);
        }
        let device = match (device, self.default_device) {
            (Some(value), _) => DeviceId::new(value.into_owned())
                .map_err(|e| {
                    let tag = quoted(self.device_tag);
                    format!("tag {tag}: {} is not a valid device id: {}", quoted(&e.value), e.rule)
                })?
                .into_string(),
            (None, Some(default)) => default.to_owned(),
            (None, None) => {
                return Err(format!(
                    "missing tag {} (the tag that names the device; or write with a device token)",
                    quoted(self.device_tag)
                ));
            }
        };
        if self.rows >= self.limits.max_rows {
            return Err(format!("over the limit of {} rows per body", self.limits.max_rows));
        }
        self.rows += 1;
        let mut row =
            Row { time_ns, device, tags: Vec::with_capacity(self.tags.len()), fields: Vec::with_capacity(self.fields.len()) };
        for (key, value) in self.tags.drain(..) {
            row.tags.push((key.into_owned(), value.into_owned()));
        }
        for (key, value) in self.fields.drain(..) {
            row.fields.push((key.into_owned(), value));
        }
        self.batches[table].rows.push(row);
        Ok(())
    }

    /// The batch for a measurement as written, created (and the name checked) on first sight.
    fn table(&mut self, raw: &'a str, escaped: bool) -> Result<usize, String> {
        if let Some((name, index)) = self.last
            && name == raw
        {
            return Ok(index);
        }
        let index = match self.index.get(raw) {
            Some(&index) => index,
            None => {
                let name = unescape::<false>(raw, escaped);
                let table = TableName::new(table_for_measurement(&name))
                    .map_err(|e| format!("measurement {} is not a valid table name: {}", quoted(&name), e.rule))?;
                // Two spellings of one table (`a\ b`, `a_b`) share its batch.
                let index = match self.batches.iter().position(|b| b.table == table) {
                    Some(index) => index,
                    None => {
                        self.batches.push(Batch::new(table));
                        self.batches.len() - 1
                    }
                };
                self.index.insert(raw, index);
                index
            }
        };
        self.last = Some((raw, index));
        Ok(index)
    }

    fn check_tag(&self, key: &str, value: &str) -> Result<(), String> {
        let limits = self.limits;
        if key.len() > limits.max_name_bytes {
            let (len, max) = (key.len(), limits.max_name_bytes);
            return Err(format!("tag {}: key is {len} bytes, over the limit of {max}", quoted(key)));
        }
        if RESERVED_NAMES.contains(&key) {
            return Err(format!("tag {}: key is reserved (every row has the columns \"time\" and \"device\")", quoted(key)));
        }
        if value.len() > limits.max_string_bytes {
            let (len, max) = (value.len(), limits.max_string_bytes);
            return Err(format!("tag {}: value is {len} bytes, over the limit of {max}", quoted(key)));
        }
        self.check_width()
    }

    /// Whether the line may have one more tag or field.
    fn check_width(&self) -> Result<(), String> {
        let max = self.limits.max_fields_per_row;
        if self.tags.len() + self.fields.len() >= max {
            return Err(format!("over the limit of {max} tags and fields per line"));
        }
        Ok(())
    }

    /// A key repeated among the tags, among the fields, or used as both, as an error message.
    fn clash(&self, has_device_tag: bool) -> Option<String> {
        let (tags, fields) = (&self.tags, &self.fields);
        let key = |i: usize| -> &str { if i < tags.len() { &tags[i].0 } else { &fields[i - tags.len()].0 } };
        let describe = |first: usize, second: usize| {
            let name = quoted(key(second));
            match (first < tags.len(), second < tags.len()) {
                (true, true) => format!("tag {name} appears more than once"),
                (false, false) => format!("field {name} appears more than once"),
                _ => format!("{name} is used as both a tag and a field"),
            }
        };
        let n = tags.len() + fields.len();
        if n <= 16 {
            for second in 1..n {
                if let Some(first) = (0..second).find(|&first| key(first) == key(second)) {
                    return Some(describe(first, second));
                }
            }
        } else {
            let mut seen = HashMap::with_capacity(n);
            for second in 0..n {
                if let Some(first) = seen.insert(key(second), second) {
                    return Some(describe(first, second));
                }
            }
        }
        let device_field = fields.iter().find(|(k, _)| has_device_tag && k == self.device_tag);
        device_field.map(|(k, _)| format!("{} is used as both a tag and a field", quoted(k)))
    }
}

/// The table a measurement lands in. InfluxDB allows any character in a measurement
/// (`my\ measurement`, `a\,b`); table names are SQL identifiers and directory names, so each
/// character outside letters, digits, `.`, `_` and `-` becomes `_`: `my measurement` is queried
/// as `my_measurement` with no quoting. Names that still break a rule (too long, a leading `_`,
/// a platform table) are refused.
fn table_for_measurement(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}
