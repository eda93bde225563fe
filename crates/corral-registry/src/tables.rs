//! The registry's tables in SQL: `devices` (one row per device, with the attributes its profile
//! declares as typed columns and whether it is online) and `certificates` (one row per device
//! certificate, with `days_to_expiry`). Each is read whole at query time, scoped to the caller's
//! tenant by the registry before a row leaves it.

use crate::{AttributeDecl, Device, DeviceCertificate, Principal, Registry};
use arrow::array::{ArrayRef, BooleanBuilder, Float64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use corral_model::{TenantId, WireError};
use corral_services::{DeviceFacts, OnlineStatus, SystemTable};
use std::sync::Arc;

/// SQL's `devices`: the registry's devices, and whether each is online now.
pub struct DevicesTable {
    pub registry: Arc<dyn Registry>,
    pub online: Arc<dyn OnlineStatus>,
}

#[async_trait]
impl SystemTable for DevicesTable {
    fn name(&self) -> &'static str {
        "devices"
    }

    async fn scan(&self, tenant: Option<&str>) -> Result<RecordBatch, WireError> {
        let tenant = tenant.map(TenantId::new).transpose().map_err(|e| WireError::bad_input(e.to_string()))?;
        let devices = self.registry.devices_for_sql(tenant.as_ref()).await.map_err(|e| e.to_wire())?;
        let declared = self.registry.declared_attributes().await.map_err(|e| e.to_wire())?;
        let facts: Vec<DeviceFacts> = devices.iter().map(Device::scope_facts).collect();
        let online = self.online.online(&facts).await;
        devices_batch(&devices, &declared, &online).map_err(|e| WireError::internal(e.to_string()))
    }
}

/// SQL's `certificates`: every device certificate the tenant's CAs issued or saw.
pub struct CertificatesTable(pub Arc<dyn Registry>);

#[async_trait]
impl SystemTable for CertificatesTable {
    fn name(&self) -> &'static str {
        "certificates"
    }

    async fn scan(&self, tenant: Option<&str>) -> Result<RecordBatch, WireError> {
        let scope = tenant.map(TenantId::new).transpose().map_err(|e| WireError::bad_input(e.to_string()))?;
        let actor = Principal { tenant: scope, ..Principal::system() };
        let certificates = self.0.all_device_certificates(&actor).await.map_err(|e| e.to_wire())?;
        certificates_batch(&certificates, chrono::Utc::now()).map_err(|e| WireError::internal(e.to_string()))
    }
}

/// SQL's `certificates` table: one row per device certificate, with `days_to_expiry` as of `now`
/// (negative once expired) so expiring certificates are one query away.
fn certificates_batch(
    certificates: &[(DeviceCertificate, TenantId)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let text = |f: &dyn Fn(&DeviceCertificate, &TenantId) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::new();
        certificates.iter().for_each(|(c, t)| b.append_option(f(c, t)));
        Arc::new(b.finish())
    };
    let time = |f: &dyn Fn(&DeviceCertificate) -> Option<i64>| -> ArrayRef {
        let mut b = TimestampNanosecondBuilder::new().with_timezone("UTC");
        certificates.iter().for_each(|(c, _)| b.append_option(f(c)));
        Arc::new(b.finish())
    };
    let timestamp =
        |name: &str, nullable| Field::new(name, DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), nullable);
    let fields = vec![
        Field::new("device", DataType::Utf8, false),
        Field::new("tenant", DataType::Utf8, false),
        Field::new("serial", DataType::Utf8, false),
        Field::new("fingerprint", DataType::Utf8, false),
        Field::new("ca", DataType::Utf8, false),
        timestamp("not_before", false),
        timestamp("not_after", false),
        Field::new("days_to_expiry", DataType::Float64, false),
        Field::new("revoked", DataType::Boolean, false),
        timestamp("revoked_at", true),
        Field::new("revoked_by", DataType::Utf8, true),
        timestamp("issued_at", false),
        Field::new("issued_by", DataType::Utf8, false),
    ];
    let mut days = Float64Builder::new();
    certificates.iter().for_each(|(c, _)| days.append_value((c.not_after - now).num_seconds() as f64 / 86_400.0));
    let columns: Vec<ArrayRef> = vec![
        text(&|c, _| Some(c.device.to_string())),
        text(&|_, t| Some(t.to_string())),
        text(&|c, _| Some(c.serial.clone())),
        text(&|c, _| Some(c.fingerprint.clone())),
        text(&|c, _| Some(c.ca.clone())),
        time(&|c| c.not_before.timestamp_nanos_opt()),
        time(&|c| c.not_after.timestamp_nanos_opt()),
        Arc::new(days.finish()),
        Arc::new(arrow::array::BooleanArray::from(certificates.iter().map(|(c, _)| c.revoked_at.is_some()).collect::<Vec<_>>())),
        time(&|c| c.revoked_at.and_then(|t| t.timestamp_nanos_opt())),
        text(&|c, _| c.revoked_by.clone()),
        time(&|c| c.issued_at.timestamp_nanos_opt()),
        text(&|c, _| Some(c.issued_by.clone())),
    ];
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

const BASE_COLUMNS: &[&str] =
    &["device", "profile", "tenant", "site", "status", "gateway", "tags", "attributes", "last_seen", "created_at", "online"];

/// One row per device; attributes a profile declares become typed columns, the rest stay in the
/// `attributes` JSON text column (query it with `attributes LIKE` or `json` functions later).
/// `online` is given per device, in order.
fn devices_batch(
    devices: &[Device],
    declared: &[AttributeDecl],
    online: &[bool],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let text = |f: &dyn Fn(&Device) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for d in devices {
            b.append_option(f(d));
        }
        Arc::new(b.finish())
    };
    let time = |f: &dyn Fn(&Device) -> Option<i64>| -> ArrayRef {
        let mut b = TimestampNanosecondBuilder::new().with_timezone("UTC");
        for d in devices {
            b.append_option(f(d));
        }
        Arc::new(b.finish())
    };
    let mut fields = vec![
        Field::new("device", DataType::Utf8, false),
        Field::new("profile", DataType::Utf8, true),
        Field::new("tenant", DataType::Utf8, false),
        Field::new("site", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("gateway", DataType::Utf8, true),
        Field::new("tags", DataType::Utf8, false),
        Field::new("attributes", DataType::Utf8, false),
        Field::new("last_seen", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), true),
        Field::new("created_at", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
        Field::new("online", DataType::Boolean, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        text(&|d| Some(d.id.to_string())),
        text(&|d| d.profile.clone()),
        text(&|d| Some(d.tenant.to_string())),
        text(&|d| d.site.clone()),
        text(&|d| serde_json::to_value(d.status).ok().and_then(|v| v.as_str().map(str::to_string))),
        text(&|d| d.gateway.as_ref().map(|g| g.to_string())),
        text(&|d| Some(serde_json::to_string(&d.tags).unwrap_or_default())),
        text(&|d| Some(serde_json::Value::Object(d.attributes.clone()).to_string())),
        time(&|d| d.last_seen.and_then(|t| t.timestamp_nanos_opt())),
        time(&|d| d.created_at.timestamp_nanos_opt()),
        Arc::new(arrow::array::BooleanArray::from(online.to_vec())),
    ];
    let mut seen: Vec<&str> = BASE_COLUMNS.to_vec();
    for decl in declared {
        if seen.contains(&decl.name.as_str()) {
            continue; // a base column wins; the value is still in `attributes`
        }
        seen.push(&decl.name);
        let name = decl.name.as_str();
        let (data_type, array): (DataType, ArrayRef) = match decl.r#type.as_str() {
            "number" => {
                let mut b = Float64Builder::new();
                devices.iter().for_each(|d| b.append_option(d.attributes.get(name).and_then(|v| v.as_f64())));
                (DataType::Float64, Arc::new(b.finish()))
            }
            "boolean" => {
                let mut b = BooleanBuilder::new();
                devices.iter().for_each(|d| b.append_option(d.attributes.get(name).and_then(|v| v.as_bool())));
                (DataType::Boolean, Arc::new(b.finish()))
            }
            _ => (
                DataType::Utf8,
                text(&|d| d.attributes.get(name).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))),
            ),
        };
        fields.push(Field::new(name, data_type, true));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
