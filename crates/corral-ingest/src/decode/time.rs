//! Timestamps to Unix nanoseconds (UTC, `i64`), with overflow checks.
//!
//! `i64` nanoseconds reach from 1677-09-21 to 2262-04-11; anything outside is
//! [`TimeError::OutOfRange`], never a wrapped or saturated value.
//!
//! Fractional numbers (epoch milliseconds, SenML seconds) are converted through their shortest
//! decimal form, so `1700000000123.456` ms is exactly `1_700_000_000_123_456_000` ns rather than
//! the nearest value a double product happens to give. Digits below the nanosecond are rounded.

use chrono::DateTime;

/// Why a timestamp was refused. The text is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("invalid RFC 3339 timestamp {text}: {reason}")]
    Invalid { text: String, reason: String },
    #[error("timestamp out of range (must fall between the years 1677 and 2262)")]
    OutOfRange,
}

/// Parses an RFC 3339 timestamp with any offset (`Z`, `+02:00`, ...) to UTC nanoseconds.
pub fn rfc3339_to_ns(text: &str) -> Result<i64, TimeError> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map_err(|e| TimeError::Invalid { text: super::quoted(text), reason: e.to_string() })?;
    parsed.timestamp_nanos_opt().ok_or(TimeError::OutOfRange)
}

/// Whole Unix epoch milliseconds to nanoseconds.
pub fn epoch_ms_to_ns(ms: i64) -> Result<i64, TimeError> {
    ms.checked_mul(1_000_000).ok_or(TimeError::OutOfRange)
}

/// Unix epoch milliseconds, possibly fractional, to nanoseconds.
pub fn epoch_ms_f64_to_ns(ms: f64) -> Result<i64, TimeError> {
    decimal_to_ns(ms, 6)
}

/// Seconds, possibly fractional (SenML times), to nanoseconds. Also used for relative times.
pub fn seconds_f64_to_ns(seconds: f64) -> Result<i64, TimeError> {
    decimal_to_ns(seconds, 9)
}

/// `value` × 10^`digits` as an integer, computed on the decimal digits of `value`'s shortest
/// round-trip representation (Rust's `Display` for `f64` never uses an exponent).
fn decimal_to_ns(value: f64, digits: u32) -> Result<i64, TimeError> {
    // 1e19 is beyond i64 in every unit used here; the bound keeps the text short.
    if !value.is_finite() || value.abs() >= 1e19 {
        return Err(TimeError::OutOfRange);
    }
    let text = value.abs().to_string();
    let (whole, frac) = text.split_once('.').unwrap_or((text.as_str(), ""));
    let whole: i64 = whole.parse().map_err(|_| TimeError::OutOfRange)?;
    let frac = frac.as_bytes();
    let mut part: i64 = 0;
    for i in 0..digits as usize {
        part = part * 10 + frac.get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    if frac.get(digits as usize).is_some_and(|b| *b >= b'5') {
        part += 1;
    }
    let ns = whole.checked_mul(10_i64.pow(digits)).and_then(|w| w.checked_add(part)).ok_or(TimeError::OutOfRange)?;
    Ok(if value < 0.0 { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_any_offset_to_utc() {
        assert_eq!(rfc3339_to_ns("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(rfc3339_to_ns("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(rfc3339_to_ns("1969-12-31T19:00:00.000000001-05:00"), Ok(1));
        assert_eq!(rfc3339_to_ns("2026-11-21T10:00:00.5Z"), Ok(1_795_255_200_500_000_000));
    }

    #[test]
    fn rfc3339_errors() {
        let err = rfc3339_to_ns("yesterday").unwrap_err();
        assert!(err.to_string().starts_with("invalid RFC 3339 timestamp \"yesterday\": "), "{err}");
        assert!(rfc3339_to_ns("2026-11-21").is_err());
        assert!(rfc3339_to_ns("2026-13-01T00:00:00Z").is_err());
        assert_eq!(rfc3339_to_ns("1600-01-01T00:00:00Z"), Err(TimeError::OutOfRange));
        assert_eq!(rfc3339_to_ns("2263-01-01T00:00:00Z"), Err(TimeError::OutOfRange));
        assert_eq!(rfc3339_to_ns("2262-04-11T23:47:16.854775807Z"), Ok(i64::MAX));
        assert_eq!(rfc3339_to_ns("1677-09-21T00:12:43.145224192Z"), Ok(i64::MIN));
        let long = "x".repeat(10_000);
        assert!(rfc3339_to_ns(&long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn epoch_ms() {
        assert_eq!(epoch_ms_to_ns(1_700_000_000_123), Ok(1_700_000_000_123_000_000));
        assert_eq!(epoch_ms_to_ns(-1), Ok(-1_000_000));
        assert_eq!(epoch_ms_to_ns(i64::MAX / 1000), Err(TimeError::OutOfRange));
        assert_eq!(epoch_ms_f64_to_ns(1_700_000_000_123.456), Ok(1_700_000_000_123_456_000));
        assert_eq!(epoch_ms_f64_to_ns(1.5), Ok(1_500_000));
        assert_eq!(epoch_ms_f64_to_ns(-1.5), Ok(-1_500_000));
        assert_eq!(epoch_ms_f64_to_ns(0.0000004), Ok(0));
        assert_eq!(epoch_ms_f64_to_ns(0.0000005), Ok(1));
        assert_eq!(epoch_ms_f64_to_ns(1e13), Err(TimeError::OutOfRange));
        assert_eq!(epoch_ms_f64_to_ns(f64::NAN), Err(TimeError::OutOfRange));
        assert_eq!(epoch_ms_f64_to_ns(1e300), Err(TimeError::OutOfRange));
    }

    #[test]
    fn seconds() {
        assert_eq!(seconds_f64_to_ns(1.276020076001e9), Ok(1_276_020_076_001_000_000));
        assert_eq!(seconds_f64_to_ns(-5.0), Ok(-5_000_000_000));
        assert_eq!(seconds_f64_to_ns(0.1), Ok(100_000_000));
        assert_eq!(seconds_f64_to_ns(1e-10), Ok(0));
        assert_eq!(seconds_f64_to_ns(9.3e9), Err(TimeError::OutOfRange));
        assert_eq!(seconds_f64_to_ns(f64::INFINITY), Err(TimeError::OutOfRange));
    }
}
