//! Reading many devices: the paginated, filtered listing behind `GET /api/v1/devices`, and the
//! full scan behind the SQL `devices` table.

use super::SqliteRegistry;
use super::devices::{DEVICE_COLUMNS, device_from_row};
use crate::registry::DeviceSearch;
use crate::{Device, DeviceFilter, DevicePage, Principal, RegistryError};
use async_trait::async_trait;
use corral_model::{DeviceId, TenantId};
use sqlx::Row;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The text `q` searches: id, site, profile, and the stored JSON of tags and attributes.
/// `lower` in SQLite folds ASCII only, so the needle is folded the same way (not Unicode-wide),
/// keeping both sides consistent.
const SEARCH_TEXT: &str =
    "lower(id || ' ' || COALESCE(site, '') || ' ' || COALESCE(profile, '') || ' ' || tags || ' ' || attributes)";

/// WHERE clauses with their text arguments, in order.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    args: Vec<String>,
}

impl Conditions {
    fn push(&mut self, clause: &str, arg: impl Into<String>) {
        self.clauses.push(clause.to_string());
        self.args.push(arg.into());
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!(" WHERE {}", self.clauses.join(" AND ")) }
    }
}

/// Treats `?site=` like no site filter: that is what a cleared form field means.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

#[async_trait]
impl DeviceSearch for SqliteRegistry {
    async fn list_devices(&self, actor: &Principal, filter: &DeviceFilter) -> Result<DevicePage, RegistryError> {
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let mut cond = Conditions::default();
        match (&actor.tenant, &filter.tenant) {
            // Asking for another tenant's devices finds none, like asking for one of them by id.
            (Some(scope), Some(t)) if scope != t => {
                return Ok(DevicePage { devices: Vec::new(), total: 0, next: None });
            }
            (Some(t), _) | (None, Some(t)) => cond.push("tenant = ?", t.as_str()),
            (None, None) => {}
        }
        if let Some(site) = given(&filter.site) {
            cond.push("site = ?", site);
        }
        if let Some(profile) = given(&filter.profile) {
            cond.push("profile = ?", profile);
        }
        if let Some(status) = filter.status {
            cond.push("status = ?", status.as_str());
        }
        if let Some(q) = given(&filter.q) {
            cond.push(&format!("instr({SEARCH_TEXT}, ?) > 0"), q.to_ascii_lowercase());
        }
        if let Some(tag) = given(&filter.tag) {
            cond.push("EXISTS (SELECT 1 FROM json_each(devices.tags) WHERE json_each.value = ?)", tag);
        }
        let count_sql = format!("SELECT COUNT(*) AS n FROM devices{}", cond.sql());
        let column = match given(&filter.sort).unwrap_or("id") {
            c @ ("id" | "site" | "profile" | "status" | "tenant" | "last_seen" | "created_at") => c,
            other => {
                return Err(RegistryError::BadInput(format!(
                    "sort: {other:?} is not one of id, site, profile, status, tenant, last_seen, created_at"
                )));
            }
        };
        let desc = filter.desc.unwrap_or(false);
        // Ascending id pages by cursor; any other order by offset, with id breaking ties so the
        // order is total and pages do not overlap.
        let by_cursor = column == "id" && !desc && filter.offset.is_none();
        if by_cursor && let Some(after) = given(&filter.after) {
            cond.push("id > ?", after);
        }
        let direction = if desc { "DESC" } else { "ASC" };
        let offset = if by_cursor { 0 } else { filter.offset.unwrap_or(0) };
        // One more row than the page tells whether another page follows without a second count.
        let page_sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices{} ORDER BY {column} {direction}, id {direction} LIMIT {} OFFSET {offset}",
            cond.sql(),
            limit + 1
        );

        // A read transaction: total and page come from the same snapshot.
        let mut tx = self.pool().begin().await?;
        let mut count = sqlx::query(&count_sql);
        // The count has every argument except the cursor, which is always last.
        let count_args =
            if by_cursor && given(&filter.after).is_some() { &cond.args[..cond.args.len() - 1] } else { &cond.args[..] };
        for a in count_args {
            count = count.bind(a);
        }
        let total: i64 = count.fetch_one(&mut *tx).await?.try_get("n")?;
        let mut page = sqlx::query(&page_sql);
        for a in &cond.args {
            page = page.bind(a);
        }
        let rows = page.fetch_all(&mut *tx).await?;
        tx.commit().await?;

        let mut devices = rows.iter().map(device_from_row).collect::<Result<Vec<_>, _>>()?;
        let next = if devices.len() > limit as usize {
            devices.truncate(limit as usize);
            // Sorted pages continue at the next offset; the cursor is for id order only.
            if by_cursor { devices.last().map(|d| d.id.to_string()) } else { Some((offset + limit).to_string()) }
        } else {
            None
        };
        for d in &mut devices {
            self.inner.presence.merge_into(d);
        }
        Ok(DevicePage { devices, total: u64::try_from(total).unwrap_or(0), next })
    }

    async fn devices_for_sql(&self, tenant: Option<&TenantId>) -> Result<Vec<Device>, RegistryError> {
        let rows = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id"))
            .bind(tenant.map(TenantId::as_str))
            .fetch_all(self.pool())
            .await?;
        let mut devices = rows.iter().map(device_from_row).collect::<Result<Vec<_>, _>>()?;
        for d in &mut devices {
            self.inner.presence.merge_into(d);
        }
        Ok(devices)
    }

    async fn children_of(&self, gateway: &DeviceId) -> Result<Vec<DeviceId>, RegistryError> {
        let rows = sqlx::query("SELECT id FROM devices WHERE gateway = ? AND status != 'decommissioned' ORDER BY id")
            .bind(gateway.as_str())
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                DeviceId::new(id).map_err(|e| RegistryError::storage(format!("device id in registry: {e}")))
            })
            .collect()
    }

    async fn tenant_of(&self, device: &str) -> Result<Option<TenantId>, RegistryError> {
        let row = sqlx::query("SELECT tenant FROM devices WHERE id = ?").bind(device).fetch_optional(self.pool()).await?;
        row.map(|r| {
            let tenant: String = r.try_get("tenant")?;
            TenantId::new(tenant).map_err(|e| RegistryError::storage(format!("tenant in registry: {e}")))
        })
        .transpose()
    }
}
