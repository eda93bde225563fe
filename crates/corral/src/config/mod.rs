//! The configuration tree, one declaration per setting.
//!
//! Each library owns its section as a documented serde struct: `[storage]`
//! (`corral_store::StorageSettings`), `[mqtt]` (`corral_mqtt::MqttSettings`), `[coap]`
//! (`corral_coap::CoapSettings`), `[rules]` (`corral_rules::RulesConfig`), `[twin]`
//! (`corral_twin::TwinSettings`), `[commands]` (`corral_commands::CommandSettings`), `[campaigns]`
//! (`corral_campaigns::CampaignSettings`), `[pg]` (`corral_pg::PgSettings`), `[exports]`
//! (`corral_exports::ExportSettings`). The binary flattens
//! them into [`Config`] beside the few keys of the server itself (`data_dir`, the HTTP
//! listeners, `log`, `[limits]`). A field's doc comment is its documentation everywhere:
//! `corral config` prints it above the key, the settings table of `docs/operations.md` is
//! generated from it (a test keeps the two equal), and every key has an environment variable
//! derived from its path ([`settings`]).
//!
//! Precedence: `--set key=value` > a named flag (or its own environment variable) >
//! `CORRAL_<SECTION>_<KEY>` > the TOML file (`--config`) > the default.

mod args;
pub mod settings;

pub use args::{ConfigArgs, ServeArgs};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the registry (registry.db), the WAL (store/wal) and Parquet (store/tables).
    pub data_dir: PathBuf,
    /// HTTP listener: REST API, ingest, SQL, /metrics, the console. Port 0 picks a free port.
    pub http: String,
    /// HTTPS listener (`off` disables it): the same routes over TLS; devices may ingest with a
    /// client certificate instead of a token. On only when `mqtt.tls_cert` and `mqtt.tls_key` are set.
    pub https: String,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `corral_store=debug,info`.
    pub log: String,
    /// The write buffer, persistence to Parquet and the WAL.
    pub storage: corral_store::StorageSettings,
    /// Limits on requests and queries.
    pub limits: LimitsConfig,
    /// MQTT 3.1.1/5.0 over TCP and TLS (and over WebSocket at /mqtt on the HTTP listener).
    pub mqtt: corral_mqtt::MqttSettings,
    /// CoAP over UDP and over DTLS.
    pub coap: corral_coap::CoapSettings,
    /// Rules, alarms and the delivery of their actions.
    pub rules: corral_rules::RulesConfig,
    /// Device twins: the limits every desired and reported document is held to.
    pub twin: corral_twin::TwinSettings,
    /// Tracked commands: how long finished ones are kept.
    pub commands: corral_commands::CommandSettings,
    /// Firmware artifacts and campaigns.
    pub campaigns: corral_campaigns::CampaignSettings,
    /// The PostgreSQL wire protocol: the same SQL as `/api/v1/query`, for psql and BI tools.
    pub pg: corral_pg::PgSettings,
    /// Scheduled exports to a directory or an S3-compatible bucket.
    pub exports: corral_exports::ExportSettings,
}

/// `[limits]`: what one request or query may take (HTTP and the SQL engine).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body, bytes (413 above it; checked while reading, after authentication).
    pub max_body_bytes: usize,
    /// Longer queries get 503.
    pub query_timeout_secs: u64,
    /// Most rows in one JSON query answer ("truncated": true beyond; CSV allows 10x).
    pub max_query_rows: usize,
    /// Memory all running queries may hold together, MiB; beyond it a query fails with a clear error.
    pub query_memory_mb: usize,
    /// A telemetry table never grows beyond this many columns (400 for the request that would).
    pub max_columns_per_table: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./corral-data"),
            http: "0.0.0.0:8080".into(),
            https: "0.0.0.0:8443".into(),
            log: "info".into(),
            storage: Default::default(),
            limits: LimitsConfig::default(),
            mqtt: Default::default(),
            coap: Default::default(),
            rules: Default::default(),
            twin: Default::default(),
            commands: Default::default(),
            campaigns: Default::default(),
            pg: Default::default(),
            exports: Default::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 16 << 20,
            query_timeout_secs: 30,
            max_query_rows: 100_000,
            query_memory_mb: 512,
            max_columns_per_table: 1000,
        }
    }
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.http_addr()?;
        self.storage.validate().map_err(|e| anyhow::anyhow!("storage: {e}"))?;
        let l = &self.limits;
        if l.max_body_bytes < 1024 || l.query_timeout_secs == 0 || l.max_query_rows == 0 {
            anyhow::bail!("limits: max_body_bytes must be >= 1024, query_timeout_secs and max_query_rows positive");
        }
        if l.query_memory_mb < 16 || l.max_columns_per_table < 8 {
            anyhow::bail!("limits: query_memory_mb must be >= 16 and max_columns_per_table >= 8");
        }
        self.mqtt_addr()?;
        self.mqtt.validate().map_err(|e| anyhow::anyhow!("mqtt: {e}"))?;
        self.mqtts_addr()?;
        self.https_addr()?;
        self.coap_addr()?;
        self.twin.validate().map_err(|e| anyhow::anyhow!("twin: {e}"))?;
        self.exports.validate().map_err(|e| anyhow::anyhow!("exports: {e}"))?;
        self.campaigns.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        self.coaps_addr()?;
        self.pg_addr()?;
        self.coap.validate().map_err(|e| anyhow::anyhow!("coap: {e}"))?;
        let r = &self.rules;
        r.webhooks.validate().map_err(|e| anyhow::anyhow!("rules.webhooks: {e}"))?;
        let o = &r.outbox;
        if o.max_attempts == 0
            || o.retry_base_ms == 0
            || o.retry_max_ms < o.retry_base_ms
            || o.concurrency == 0
            || o.timeout_ms == 0
        {
            anyhow::bail!(
                "rules.outbox: max_attempts, retry_base_ms, concurrency and timeout_ms must be positive, retry_max_ms >= retry_base_ms"
            );
        }
        if r.absence_check_ms < 10 || r.queue == 0 || r.linger_ms > 1_000 || r.offline_after_ms == 0 {
            anyhow::bail!("rules: absence_check_ms must be >= 10, queue and offline_after_ms positive, linger_ms at most 1000");
        }
        Ok(())
    }

    /// The MQTT listener's address, `None` when it is `off`.
    pub fn mqtt_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        listener("mqtt.listen", &self.mqtt.listen, "0.0.0.0:1883")
    }

    /// The CoAP listener's address, `None` when it is `off`.
    pub fn coap_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        listener("coap.listen", &self.coap.listen, "0.0.0.0:5683")
    }

    /// The CoAP over DTLS listener's address, `None` when it is `off`.
    pub fn coaps_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        listener("coap.dtls_listen", &self.coap.dtls_listen, "0.0.0.0:5684")
    }

    /// The PostgreSQL wire listener's address, `None` when it is `off`.
    pub fn pg_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        listener("pg.listen", &self.pg.listen, "0.0.0.0:5433")
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.http.parse().with_context(|| format!("http: {:?} is not an address like 0.0.0.0:8080", self.http))
    }

    /// The MQTTS listener's address: `None` without a certificate, or when `off`.
    pub fn mqtts_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.mqtt.tls_cert.is_none() {
            return Ok(None);
        }
        listener("mqtt.tls_listen", &self.mqtt.tls_listen, "0.0.0.0:8883")
    }

    /// The HTTPS listener's address: `None` without a certificate, or when `off`.
    pub fn https_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.mqtt.tls_cert.is_none() {
            return Ok(None);
        }
        listener("https", &self.https, "0.0.0.0:8443")
    }

    /// The effective config as commented TOML, ready to save as a config file.
    pub fn render(&self) -> String {
        settings::render(self)
    }
}

/// A listener's address, `None` for `off`.
fn listener(key: &str, value: &str, example: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value == "off" {
        return Ok(None);
    }
    Ok(Some(value.parse().with_context(|| format!("{key}: {value:?} is not an address like {example} or `off`"))?))
}
