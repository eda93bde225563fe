//! Adapters between rooms. Each trait lives in the crate that uses it; the binary, the only place
//! that knows every room, implements them over the concrete types.

use arrow::array::{ArrayRef, BooleanBuilder, Float64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use corral_http::{MetricsSource, SqlResult, SqlService};
use corral_ingest::{DurableStore, Presence};
use corral_model::{Batch, Envelope, TenantId, WireError};
use corral_registry::{Device, Registry};
use corral_store::{DeviceDirectory, QueryEngine, Store};
use std::sync::Arc;

/// The pipeline stores through the store.
pub struct StoreSink(pub Store);

#[async_trait]
impl DurableStore for StoreSink {
    async fn write(&self, batches: Vec<Batch>) -> Result<Vec<Batch>, WireError> {
        self.0.write(batches).await.map_err(|e| e.to_wire())
    }
}

/// The pipeline reports presence to the registry (`last_seen`, kept in memory and flushed).
pub struct RegistryPresence(pub Registry);

impl Presence for RegistryPresence {
    fn heard_from(&self, envelope: &Envelope) {
        let at = chrono::DateTime::from_timestamp_nanos(envelope.received_at_ns);
        self.0.touch(&envelope.device, at);
    }
}

/// Whether devices are online: their MQTT connections and the rules' offline windows (see
/// `corral_rules::OfflineWindows`).
#[derive(Clone)]
pub struct Online(pub crate::broker::ConnectedDevices, pub corral_rules::Rules);

#[async_trait]
impl corral_http::OnlineStatus for Online {
    async fn online(&self, devices: &[Device]) -> Vec<bool> {
        let windows = self.1.offline_windows().await;
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        devices.iter().map(|d| windows.online(&scope_facts(d), self.0.connection(d.id.as_str()), now)).collect()
    }
}

/// What scopes and presence need of a device (attributes left out: they can be large).
fn scope_facts(d: &Device) -> corral_rules::DeviceFacts {
    corral_rules::DeviceFacts {
        id: d.id.to_string(),
        tenant: d.tenant.to_string(),
        profile: d.profile.clone(),
        site: d.site.clone(),
        tags: d.tags.clone(),
        attributes: Default::default(),
        last_seen_ns: d.last_seen.and_then(|t| t.timestamp_nanos_opt()),
    }
}

/// SQL's `devices` and `certificates` tables, read from the registry at query time, and
/// `alarms` from the rules.
pub struct RegistryDirectory(pub Registry, pub Online, pub corral_rules::Rules);

impl std::fmt::Debug for RegistryDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryDirectory")
    }
}

impl std::fmt::Debug for RegistryPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryPresence")
    }
}

#[async_trait]
impl DeviceDirectory for RegistryDirectory {
    async fn devices(&self, tenant: Option<&str>) -> Result<RecordBatch, String> {
        let tenant = tenant.map(TenantId::new).transpose().map_err(|e| e.to_string())?;
        let devices = self.0.devices_for_sql(tenant.as_ref()).await.map_err(|e| e.to_string())?;
        let declared = self.0.declared_attributes().await.map_err(|e| e.to_string())?;
        let online = corral_http::OnlineStatus::online(&self.1, &devices).await;
        devices_batch(&devices, &declared, &online).map_err(|e| e.to_string())
    }

    async fn table(&self, name: &str, tenant: Option<&str>) -> Result<Option<RecordBatch>, String> {
        match name {
            "alarms" => self.2.alarms_table(tenant).await.map(Some).map_err(|e| e.to_string()),
            "certificates" => {
                let scope = tenant.map(TenantId::new).transpose().map_err(|e| e.to_string())?;
                let actor = corral_registry::Principal { tenant: scope, ..corral_registry::Principal::system() };
                let certificates = self.0.all_device_certificates(&actor).await.map_err(|e| e.to_string())?;
                certificates_batch(&certificates, chrono::Utc::now()).map(Some).map_err(|e| e.to_string())
            }
            _ => Ok(None),
        }
    }
}

/// SQL's `certificates` table: one row per device certificate, with `days_to_expiry` as of `now`
/// (negative once expired) so expiring certificates are one query away.
fn certificates_batch(
    certificates: &[(corral_registry::DeviceCertificate, TenantId)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let text = |f: &dyn Fn(&corral_registry::DeviceCertificate, &TenantId) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::new();
        certificates.iter().for_each(|(c, t)| b.append_option(f(c, t)));
        Arc::new(b.finish())
    };
    let time = |f: &dyn Fn(&corral_registry::DeviceCertificate) -> Option<i64>| -> ArrayRef {
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
    declared: &[corral_registry::AttributeDecl],
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

/// The HTTP query endpoint runs SQL through the store's engine.
pub struct Sql(pub QueryEngine);

#[async_trait]
impl SqlService for Sql {
    async fn query(&self, sql: &str, tenant: Option<&str>, max_rows: usize) -> Result<SqlResult, WireError> {
        let out = self.0.query(sql, tenant, max_rows).await.map_err(|e| e.to_wire())?;
        Ok(SqlResult { schema: out.schema, batches: out.batches, truncated: out.truncated })
    }
}

/// `/metrics` lines for the store and its WAL.
pub struct StoreMetrics(pub Store);

impl MetricsSource for StoreMetrics {
    fn render(&self, out: &mut String) {
        self.0.metrics().render_prometheus(out);
    }
}

/// The MQTT broker's counters in `/metrics`, and how many devices are connected.
pub struct MqttMetrics(pub corral_mqtt::Broker, pub crate::broker::ConnectedDevices);

impl MetricsSource for MqttMetrics {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        self.0.metrics().render_prometheus(out);
        let _ = writeln!(
            out,
            "# HELP corral_mqtt_devices_online Devices with a live MQTT connection.\n\
             # TYPE corral_mqtt_devices_online gauge\ncorral_mqtt_devices_online {}",
            self.1.count()
        );
    }
}

/// MQTT over WebSocket (`GET /mqtt` on the HTTP listener) into the same broker.
pub struct MqttWebSocket(pub corral_mqtt::Broker);

#[async_trait]
impl corral_http::MqttOverWebSocket for MqttWebSocket {
    async fn serve(&self, stream: tokio::io::DuplexStream, peer: std::net::SocketAddr) {
        self.0.serve_connection(stream, peer, "ws").await;
    }
}

/// The pipeline hands every durable batch to the rules.
pub struct RulesObserver(pub corral_rules::Rules);

#[async_trait]
impl corral_ingest::Observer for RulesObserver {
    fn wants(&self) -> bool {
        self.0.wants()
    }
    async fn observe(&self, envelope: &Envelope, batches: Vec<Batch>) {
        self.0.observe(envelope, batches).await;
    }
}

/// What the rules need from the rest of the platform: device facts from the registry, the MQTT
/// broker to publish alarm events and commands (set once the broker runs), table fields from
/// the store.
pub struct RulesPlatform {
    pub registry: Registry,
    pub store: Store,
    pub broker: std::sync::OnceLock<corral_mqtt::Broker>,
}

fn facts(d: Device) -> corral_rules::DeviceFacts {
    corral_rules::DeviceFacts { attributes: d.attributes.clone(), ..scope_facts(&d) }
}

#[async_trait]
impl corral_rules::Platform for RulesPlatform {
    async fn device(&self, id: &str) -> Option<corral_rules::DeviceFacts> {
        let device = self.registry.get_device(&corral_registry::Principal::system(), id).await.ok()?;
        (device.status == corral_registry::DeviceStatus::Active).then(|| facts(device))
    }

    async fn devices(&self) -> Vec<corral_rules::DeviceFacts> {
        match self.registry.devices_for_sql(None).await {
            Ok(devices) => devices.into_iter().filter(|d| d.status == corral_registry::DeviceStatus::Active).map(facts).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing devices for absence rules failed");
                Vec::new()
            }
        }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>, tenant: &str) -> Result<(), String> {
        let broker = self.broker.get().ok_or("MQTT is off")?;
        broker
            .publish_for_tenant(topic, payload, corral_mqtt::QoS::AtLeastOnce, false, Some(tenant))
            .await
            .map_err(|e| e.to_string())
    }

    fn table_fields(&self, table: &str) -> Option<Vec<String>> {
        let snapshot = self.store.snapshot_table(table)?;
        Some(snapshot.schema.fields().iter().map(|f| f.name().clone()).filter(|n| n != "time" && n != "device").collect())
    }
}

/// `/metrics` lines for rules, alarms and the outbox.
pub struct RulesMetrics(pub corral_rules::Rules);

impl MetricsSource for RulesMetrics {
    fn render(&self, out: &mut String) {
        self.0.render_metrics(out);
    }
}
