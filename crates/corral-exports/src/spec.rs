//! What an operator asks for: an [`ExportSpec`], checked into an [`Export`] with its schedule
//! and destination parsed.

use crate::Format;
use corral_model::WireError;
use corral_services::parse_duration;
use serde::{Deserialize, Serialize};

/// A scheduled export: every `every`, the rows of `table` (or of the query `sql`) whose `time`
/// is newer than what the last run exported and older than `now - delay`, as one file per UTC
/// day under `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// 1-64 of `[A-Za-z0-9_-]`; also the folder under the destination.
    pub name: String,
    /// The table to export (its rows have a `time` column); or `sql`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// A read-only query whose result has a `time` column; instead of `table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The files' format; `parquet` by default.
    #[serde(default)]
    pub format: Format,
    /// `s3://bucket/prefix`, or a relative folder under the server's `exports.dir`.
    pub destination: String,
    /// How often it runs: `15m`, `1h`, `1d` (at least `1m`).
    pub every: String,
    /// How far behind the present a run stops, so rows that arrive a little late are still
    /// exported (`2m` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Export from this time (RFC 3339); from the oldest stored row when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<corral_model::schema::Rfc3339>")]
    pub from: Option<String>,
}

/// Where files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    S3 {
        bucket: String,
        prefix: String,
    },
    /// Relative to `exports.dir`.
    Local {
        folder: String,
    },
}

/// A checked spec.
#[derive(Debug, Clone)]
pub struct Export {
    pub spec: ExportSpec,
    pub destination: Destination,
    pub every_ns: i64,
    pub delay_ns: i64,
    pub from_ns: Option<i64>,
}

const DEFAULT_DELAY: &str = "2m";

impl Export {
    pub fn new(spec: ExportSpec) -> Result<Export, WireError> {
        let bad = |m: String| WireError::bad_input(m);
        let name_ok = !spec.name.is_empty()
            && spec.name.len() <= 64
            && spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(bad(format!("export name {:?}: use 1-64 letters, digits, '_' or '-'", spec.name)));
        }
        match (&spec.table, &spec.sql) {
            (Some(table), None) => {
                corral_model::TableName::new(table).map_err(|e| bad(e.to_string()))?;
            }
            (None, Some(sql)) if !sql.trim().is_empty() => {}
            _ => return Err(bad("name either a `table` or a `sql` query (with a `time` column) to export".into())),
        }
        let every = parse_duration(&spec.every).map_err(bad)?;
        if every.as_secs() < 60 {
            return Err(bad(format!("`every` is {}: exports run at most once a minute", spec.every)));
        }
        let delay = parse_duration(spec.delay.as_deref().unwrap_or(DEFAULT_DELAY)).map_err(bad)?;
        let from_ns = match &spec.from {
            Some(text) => Some(
                chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|e| bad(format!("`from` {text:?} is not an RFC 3339 time: {e}")))?
                    .timestamp_nanos_opt()
                    .ok_or_else(|| bad(format!("`from` {text:?} is out of range")))?,
            ),
            None => None,
        };
        let destination = parse_destination(&spec.destination).map_err(bad)?;
        Ok(Export { every_ns: every.as_nanos() as i64, delay_ns: delay.as_nanos() as i64, from_ns, destination, spec })
    }

    /// The query for rows with `from_ns <= time < to_ns`.
    pub fn window_sql(&self, from_ns: i64, to_ns: i64) -> String {
        let source = match (&self.spec.table, &self.spec.sql) {
            (Some(table), _) => format!("\"{}\"", table.replace('"', "\"\"")),
            (None, Some(sql)) => format!("({}) AS source", sql.trim().trim_end_matches(';')),
            (None, None) => unreachable!("checked in Export::new"),
        };
        format!(
            "SELECT * FROM {source} WHERE time >= to_timestamp_nanos({from_ns}) AND time < to_timestamp_nanos({to_ns}) ORDER BY time"
        )
    }

    /// The oldest row's time, to start an export without `from`.
    pub fn oldest_sql(&self) -> String {
        match (&self.spec.table, &self.spec.sql) {
            (Some(table), _) => format!("SELECT CAST(min(time) AS BIGINT) FROM \"{}\"", table.replace('"', "\"\"")),
            (None, Some(sql)) => {
                format!("SELECT CAST(min(time) AS BIGINT) FROM ({}) AS source", sql.trim().trim_end_matches(';'))
            }
            (None, None) => unreachable!("checked in Export::new"),
        }
    }
}

/// `s3://bucket/prefix` or a relative folder with no `..`.
fn parse_destination(text: &str) -> Result<Destination, String> {
    if let Some(rest) = text.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("destination {text:?}: name the bucket, as s3://bucket/prefix"));
        }
        return Ok(Destination::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() });
    }
    if text.contains("://") {
        return Err(format!("destination {text:?}: use s3://bucket/prefix or a folder under exports.dir"));
    }
    let folder = text.trim_matches('/');
    let path = std::path::Path::new(folder);
    let safe =
        !folder.is_empty() && !text.starts_with('/') && path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !safe {
        return Err(format!(
            "destination {text:?}: a local destination is a relative folder under the server's exports.dir, without `..`"
        ));
    }
    Ok(Destination::Local { folder: folder.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ExportSpec {
        ExportSpec {
            name: "nightly".into(),
            table: Some("telemetry".into()),
            sql: None,
            format: Format::Parquet,
            destination: "s3://lake/corral/".into(),
            every: "1h".into(),
            delay: None,
            from: None,
        }
    }

    #[test]
    fn destinations_are_a_bucket_or_a_folder_that_cannot_escape() {
        let export = Export::new(spec()).unwrap();
        assert_eq!(export.destination, Destination::S3 { bucket: "lake".into(), prefix: "corral".into() });
        assert_eq!(export.delay_ns, 120_000_000_000);
        for bad in ["/etc", "../up", "a/../../b", "http://x/y", "s3://", ""] {
            let mut s = spec();
            s.destination = bad.into();
            assert!(Export::new(s).is_err(), "{bad}");
        }
        let mut s = spec();
        s.destination = "finance/telemetry".into();
        assert_eq!(Export::new(s).unwrap().destination, Destination::Local { folder: "finance/telemetry".into() });
    }

    #[test]
    fn a_spec_names_one_source_a_schedule_and_a_valid_name() {
        let mut both = spec();
        both.sql = Some("SELECT 1".into());
        assert!(Export::new(both).is_err());
        let mut fast = spec();
        fast.every = "30s".into();
        assert!(Export::new(fast).unwrap_err().message.contains("once a minute"));
        let mut name = spec();
        name.name = "../x".into();
        assert!(Export::new(name).is_err());
        let mut from = spec();
        from.from = Some("yesterday".into());
        assert!(Export::new(from).unwrap_err().message.contains("RFC 3339"));
    }
}
