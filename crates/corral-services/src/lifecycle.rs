//! The life of stored data after it lands: how long it is kept (retention, per table and per
//! tenant), which coarser tables are kept beside it (rollups), and deleting one device's rows on
//! request. The REST routes and the CLI ask [`DataLifecycle`]; the store implements it.

use async_trait::async_trait;
use corral_model::WireError;
use serde::{Deserialize, Serialize};

/// Keep `table`'s rows (of `tenant`'s devices, if set) for `keep`; older rows are deleted.
/// A tenant's policy for a table overrides the table's own for that tenant's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    pub table: String,
    /// The tenant whose devices' rows it covers; absent: the table's own policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// How long rows are kept, as written: `90d`, `36h`, `2w`, `45m`.
    pub keep: String,
    /// `config` for a policy from the server's configuration (changed only there), `api` for one
    /// set through REST or the CLI. Ignored on input.
    #[serde(default)]
    pub source: PolicySource,
}

/// Where a retention policy comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicySource {
    /// Set through REST or the CLI.
    #[default]
    Api,
    /// From the server's configuration (`storage.retention`); changed only there.
    Config,
}

/// An operator-defined rollup: `source` summarised per device, tag set and `every` bucket into
/// the table `name` (one row per bucket, a column per field and aggregate, e.g. `speed_avg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollupSpec {
    /// The rollup's table: a new table name.
    pub name: String,
    /// The table of raw rows it summarises (not another rollup, not itself).
    pub source: String,
    /// Bucket width: `1m`, `15m`, `1h`, `1d`.
    pub every: String,
    /// Which of `avg`, `min`, `max`, `count`, `first`, `last`, `sum`; all but `sum` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregates: Vec<String>,
    /// Which numeric fields of `source`; every numeric field when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// What one deletion removed from one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Deletion {
    pub table: String,
    /// `retention`, or `device <id>` for a device's data deleted on request.
    pub reason: String,
    pub rows_deleted: u64,
    /// Files dropped whole.
    pub files_dropped: u64,
    /// Files rewritten without the deleted rows.
    pub files_rewritten: u64,
    /// For retention: the oldest time kept, RFC 3339 (per tenant policy, the table's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub kept_from: Option<String>,
}

#[async_trait]
pub trait DataLifecycle: Send + Sync + 'static {
    /// Every retention policy, config ones first.
    async fn retention_policies(&self) -> Vec<RetentionPolicy>;
    /// Adds or replaces the policy for its table and tenant (400 for a bad duration, 409 if the
    /// configuration declares it).
    async fn set_retention(&self, policy: RetentionPolicy) -> Result<RetentionPolicy, WireError>;
    /// Removes the API policy for `table` and `tenant` (404 if there is none).
    async fn remove_retention(&self, table: &str, tenant: Option<&str>) -> Result<(), WireError>;
    /// Applies every policy now, rather than at the next scheduled run.
    async fn enforce_retention(&self) -> Result<Vec<Deletion>, WireError>;

    async fn rollups(&self) -> Vec<RollupSpec>;
    /// Creates a rollup and fills it from the source's stored rows (400 for a bad spec, 409 if
    /// a table of that name exists).
    async fn create_rollup(&self, spec: RollupSpec) -> Result<RollupSpec, WireError>;
    /// Stops maintaining the rollup; its table keeps the rows it has (a retention policy
    /// removes them).
    async fn remove_rollup(&self, name: &str) -> Result<(), WireError>;

    /// Deletes every row `device` wrote, from every table (rollups too), and its latest rows.
    async fn delete_device_data(&self, device: &str) -> Result<Vec<Deletion>, WireError>;
}

/// Parses a duration as operators write it: a whole number and `s`, `m`, `h`, `d` or `w`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration: write e.g. 90d, 36h, 2w or 15m"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("`{text}` has no unit: write e.g. 90d, 36h, 2w or 15m (s, m, h, d, w)")),
    };
    if n == 0 {
        return Err(format!("`{text}` is zero: a duration must be positive"));
    }
    n.checked_mul(secs).map(std::time::Duration::from_secs).ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_are_read_as_operators_write_them_and_nonsense_is_named() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration(" 36h"), Ok(Duration::from_secs(36 * 3_600)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_duration("90").unwrap_err().contains("no unit"));
        assert!(parse_duration("d").unwrap_err().contains("not a duration"));
        assert!(parse_duration("0d").unwrap_err().contains("zero"));
        assert!(parse_duration("99999999999999999w").is_err());
    }
}
