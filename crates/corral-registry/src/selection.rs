//! A selection of devices (a [`Target`]): which devices a bulk command job or a campaign addresses.
//! It names a profile, site, tag or tenant (the registry's own filters) and/or an SQL condition
//! over the `devices` table, and always runs *as someone*: the registry listing and the SQL engine
//! both apply that principal's tenant scope, so a scoped caller can only ever reach its own
//! tenant's devices. Only active devices are selected.

use crate::device::{DeviceFilter, DeviceStatus};
use crate::{Principal, Registry};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use corral_model::{DeviceId, TenantId, WireError};
use corral_services::SqlService;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Registry pages are at most this long.
const REGISTRY_PAGE: u32 = 1000;

/// Which devices to address; every given field narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// An SQL condition over `devices` (`json_get_str(attributes, 'zone') = 'north'`).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

impl Target {
    /// Whether the registry's filters are needed (as opposed to `where` alone).
    fn filters_registry(&self) -> bool {
        self.profile.is_some() || self.site.is_some() || self.tag.is_some() || self.tenant.is_some()
    }

    /// Refuses a target that names nothing or whose `where` could escape its parentheses.
    pub fn check(&self) -> Result<(), WireError> {
        if !self.filters_registry() && self.condition.is_none() {
            return Err(WireError::bad_input(
                "target needs at least one of profile, site, tag, tenant or where, like {\"profile\": \"meter\"}",
            ));
        }
        if let Some(condition) = &self.condition {
            enclosed(condition).map_err(|e| WireError::bad_input(format!("where: {e}")))?;
        }
        Ok(())
    }
}

/// The active devices `target` selects as `caller` sees them, each with its tenant, in id order;
/// more than `max` is an error (narrow the target), never a silent cut.
pub async fn select_devices(
    registry: &dyn Registry,
    sql: &dyn SqlService,
    caller: &Principal,
    target: &Target,
    max: usize,
) -> Result<BTreeMap<DeviceId, TenantId>, WireError> {
    target.check()?;
    let by_registry = if target.filters_registry() { Some(listed(registry, caller, target, max).await?) } else { None };
    let by_sql = match &target.condition {
        Some(condition) => Some(queried(sql, caller, condition, max).await?),
        None => None,
    };
    match (by_registry, by_sql) {
        (Some(listed), Some(queried)) => Ok(listed.into_iter().filter(|(id, _)| queried.contains_key(id)).collect()),
        (Some(only), None) | (None, Some(only)) => Ok(only),
        (None, None) => unreachable!("checked above: a target names something"),
    }
}

fn too_many(max: usize) -> WireError {
    WireError::bad_input(format!("the target selects more than {max} devices; narrow it"))
}

/// Walks the registry's pages for the profile/site/tag/tenant filters.
async fn listed(
    registry: &dyn Registry,
    caller: &Principal,
    target: &Target,
    max: usize,
) -> Result<BTreeMap<DeviceId, TenantId>, WireError> {
    let mut filter = DeviceFilter {
        tenant: target
            .tenant
            .as_deref()
            .map(TenantId::new)
            .transpose()
            .map_err(|e| WireError::bad_input(format!("tenant: {e}")))?,
        site: target.site.clone(),
        profile: target.profile.clone(),
        tag: target.tag.clone(),
        status: Some(DeviceStatus::Active),
        limit: Some(REGISTRY_PAGE),
        ..DeviceFilter::default()
    };
    let mut devices = BTreeMap::new();
    loop {
        let page = registry.list_devices(caller, &filter).await.map_err(|e| e.to_wire())?;
        if page.total > max as u64 {
            return Err(too_many(max));
        }
        devices.extend(page.devices.into_iter().map(|d| (d.id, d.tenant)));
        match page.next {
            Some(next) if filter.after.as_ref() != Some(&next) => filter.after = Some(next),
            _ => return Ok(devices),
        }
    }
}

/// Runs `SELECT device, tenant FROM devices WHERE status = 'active' AND (<where>)` in the
/// caller's tenant scope.
async fn queried(
    sql: &dyn SqlService,
    caller: &Principal,
    condition: &str,
    max: usize,
) -> Result<BTreeMap<DeviceId, TenantId>, WireError> {
    // The condition on lines of its own, so nothing in it can reach past the parentheses.
    let statement = format!("SELECT device, tenant FROM devices WHERE status = 'active' AND (\n{condition}\n)");
    let result = sql.query(&statement, caller.tenant.as_ref().map(|t| t.as_str()), max).await?;
    if result.truncated {
        return Err(too_many(max));
    }
    let mut devices = BTreeMap::new();
    for batch in &result.batches {
        let (ids, tenants) = (text_column(batch, 0)?, text_column(batch, 1)?);
        for (id, tenant) in ids.iter().zip(tenants) {
            if let (Some(id), Some(tenant)) = (id, tenant) {
                let bad = |e: corral_model::IdError| WireError::internal(format!("device selection: {e}"));
                devices.insert(DeviceId::new(id).map_err(bad)?, TenantId::new(tenant).map_err(bad)?);
            }
        }
    }
    Ok(devices)
}

/// Column `i` of a result as text, whatever string layout the engine chose.
fn text_column(batch: &RecordBatch, i: usize) -> Result<Vec<Option<String>>, WireError> {
    let column = arrow::compute::cast(batch.column(i), &DataType::Utf8)
        .map_err(|e| WireError::internal(format!("device selection: {e}")))?;
    let text = column.as_string::<i32>();
    Ok((0..text.len()).map(|row| text.is_valid(row).then(|| text.value(row).to_string())).collect())
}

/// Refuses a `where` that could end the statement or the parentheses around it: a `;`, a
/// comment, a `)` without its `(`, or an unclosed parenthesis or quote. (The SQL engine is
/// read-only and tenant-scoped anyway; this keeps the selection to the active devices.)
fn enclosed(condition: &str) -> Result<(), String> {
    if condition.trim().is_empty() {
        return Err("the condition is empty".into());
    }
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut chars = condition.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            // A doubled quote inside a literal is the quote itself.
            (Some(q), _) if c == q => match chars.peek() {
                Some(&next) if next == q => {
                    chars.next();
                }
                _ => quote = None,
            },
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ';') => return Err("one condition, without ';'".into()),
            (None, '-') if chars.peek() == Some(&'-') => return Err("no comments".into()),
            (None, '/') if chars.peek() == Some(&'*') => return Err("no comments".into()),
            (None, '(') => depth += 1,
            (None, ')') => depth = depth.checked_sub(1).ok_or("a ')' without its '('")?,
            (None, _) => {}
        }
    }
    match (quote, depth) {
        (Some(q), _) => Err(format!("an unclosed {q}")),
        (None, 0) => Ok(()),
        (None, _) => Err("an unclosed '('".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_stays_inside_its_parentheses() {
        for ok in [
            "json_get_str(attributes, 'zone') = 'north'",
            "site = 'a;b' OR site = 'it''s (here'",
            "(profile = 'meter') AND \"site\" IS NOT NULL",
            "x - 1 > 0",
        ] {
            assert_eq!(enclosed(ok), Ok(()), "{ok}");
        }
        for bad in ["", "  ", "1=1; DROP TABLE devices", "1=1) OR (1=1", "1=1 -- ", "1=1 /* */", "(1=1", "site = 'a", "1=1)"] {
            assert!(enclosed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_target_names_something_and_refuses_unknown_fields() {
        let target: Target = serde_json::from_str(r#"{"where": "site = 'x'", "profile": "meter"}"#).unwrap();
        assert_eq!((target.condition.as_deref(), target.profile.as_deref()), (Some("site = 'x'"), Some("meter")));
        assert!(target.check().is_ok());
        assert!(serde_json::from_str::<Target>(r#"{"zone": "n"}"#).is_err());
        assert!(Target::default().check().is_err());
        assert!(Target { condition: Some("1=1; x".into()), ..Target::default() }.check().is_err());
    }
}
