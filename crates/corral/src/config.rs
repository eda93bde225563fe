//! The configuration tree. Precedence: flag > `CORRAL_*` environment variable > TOML file
//! (`--config`) > default. Clap merges flags and environment; this module lays the result over
//! the file and the defaults, validates, and renders the effective config for `corral config`.

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: String,
    /// HTTPS: the same routes over TLS, with client-certificate identity for device ingest. On
    /// only when `mqtt.tls_cert` and `mqtt.tls_key` are set (the listeners share them).
    pub https: String,
    pub log: String,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub mqtt: MqttConfig,
    pub coap: CoapConfig,
    pub rules: corral_rules::RulesConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoapConfig {
    /// UDP `host:port`, or `off`.
    pub listen: String,
    /// CoAP over DTLS (coaps) with per-device pre-shared keys: UDP `host:port`, or `off`.
    pub dtls_listen: String,
    /// DTLS sessions at once, and how long an established one lives unheard of.
    pub dtls_max_sessions: usize,
    pub dtls_idle_secs: u64,
    /// Largest request body, whole or assembled from blocks (4.13 above it).
    pub max_body_bytes: usize,
    /// A Confirmable request whose durable write takes longer gets an empty ACK, then a separate
    /// response.
    pub piggyback_wait_ms: u64,
    /// Block size of the server's answers (and the most it takes from a client): 16..=1024.
    pub block_bytes: usize,
    /// Requests processed at once; beyond it Confirmable requests get 5.03 with Max-Age 1.
    pub max_in_flight: usize,
    pub max_observers: usize,
    /// Commands kept per device for CoAP devices, and for how long.
    pub max_pending_commands: usize,
    pub command_ttl_secs: u64,
}

impl Default for CoapConfig {
    fn default() -> Self {
        let d = corral_coap::CoapConfig::default();
        CoapConfig {
            listen: "0.0.0.0:5683".into(),
            dtls_listen: "0.0.0.0:5684".into(),
            dtls_max_sessions: corral_coap::DtlsConfig::default().max_sessions,
            dtls_idle_secs: corral_coap::DtlsConfig::default().idle_timeout.as_secs(),
            max_body_bytes: d.max_body_bytes,
            piggyback_wait_ms: d.piggyback_wait.as_millis() as u64,
            block_bytes: d.block_bytes,
            max_in_flight: d.max_in_flight,
            max_observers: d.max_observers,
            max_pending_commands: d.max_pending_commands,
            command_ttl_secs: d.command_ttl.as_secs(),
        }
    }
}

impl CoapConfig {
    /// The server's settings: these over the RFC 7252 defaults.
    pub fn server(&self) -> corral_coap::CoapConfig {
        corral_coap::CoapConfig {
            max_body_bytes: self.max_body_bytes,
            piggyback_wait: std::time::Duration::from_millis(self.piggyback_wait_ms),
            block_bytes: self.block_bytes,
            max_in_flight: self.max_in_flight,
            max_observers: self.max_observers,
            max_pending_commands: self.max_pending_commands,
            command_ttl: std::time::Duration::from_secs(self.command_ttl_secs),
            ..corral_coap::CoapConfig::default()
        }
    }

    pub fn dtls(&self) -> corral_coap::DtlsConfig {
        corral_coap::DtlsConfig {
            max_sessions: self.dtls_max_sessions,
            idle_timeout: std::time::Duration::from_secs(self.dtls_idle_secs),
            ..corral_coap::DtlsConfig::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `host:port`, or `off`.
    pub listen: String,
    pub allow_anonymous: bool,
    pub max_packet_bytes: u32,
    pub max_connections: usize,
    pub max_inflight: u16,
    pub max_queued_messages: usize,
    /// Messages per second one client may publish; 0 = unlimited.
    pub publish_rate: u32,
    /// MQTT over TLS listens here once `tls_cert` and `tls_key` are set.
    pub tls_listen: String,
    /// PEM certificate chain (leaf first) and private key of the MQTTS listener.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: "0.0.0.0:1883".into(),
            allow_anonymous: false,
            max_packet_bytes: 1 << 20,
            max_connections: 100_000,
            max_inflight: 128,
            max_queued_messages: 1000,
            publish_rate: 0,
            tls_listen: "0.0.0.0:8883".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub buffer_ceiling_mb: usize,
    pub persist_mb: usize,
    pub persist_age_secs: u64,
    pub backpressure_wait_secs: u64,
    pub wal_segment_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub query_timeout_secs: u64,
    pub max_query_rows: usize,
    pub query_memory_mb: usize,
    pub max_columns_per_table: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./corral-data"),
            http: "0.0.0.0:8080".into(),
            https: "0.0.0.0:8443".into(),
            log: "info".into(),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            mqtt: MqttConfig::default(),
            coap: CoapConfig::default(),
            rules: corral_rules::RulesConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            buffer_ceiling_mb: 256,
            persist_mb: 64,
            persist_age_secs: 600,
            backpressure_wait_secs: 10,
            wal_segment_mb: 64,
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

/// Flags shared by `serve`, `demo` and `config`. Each is also an environment variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file (keys as printed by `corral config`).
    #[arg(long, env = "CORRAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the registry, WAL and Parquet files [default: ./corral-data].
    #[arg(long, env = "CORRAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listener: REST API, ingest, SQL, /metrics [default: 0.0.0.0:8080]. Port 0 picks a free port.
    #[arg(long, env = "CORRAL_HTTP")]
    pub http: Option<String>,
    /// HTTPS listener (the HTTP routes over TLS; devices may ingest with a client certificate
    /// instead of a token); on only with --tls-cert and --tls-key [default: 0.0.0.0:8443].
    #[arg(long, env = "CORRAL_HTTPS")]
    pub https: Option<String>,
    /// Log filter, e.g. `info` or `corral_store=debug,info` [default: info].
    #[arg(long, env = "CORRAL_LOG")]
    pub log: Option<String>,
    /// Write-buffer memory ceiling in MiB; writers wait, then get 503, above it [default: 256].
    #[arg(long, env = "CORRAL_BUFFER_CEILING_MB")]
    pub buffer_ceiling_mb: Option<usize>,
    /// Persist the write buffer to Parquet once it holds this many MiB [default: 64].
    #[arg(long, env = "CORRAL_PERSIST_MB")]
    pub persist_mb: Option<usize>,
    /// ...or once its oldest row is this many seconds old [default: 600].
    #[arg(long, env = "CORRAL_PERSIST_AGE_SECS")]
    pub persist_age_secs: Option<u64>,
    /// Seconds a writer waits at the buffer ceiling before it gets 503 [default: 10].
    #[arg(long, env = "CORRAL_BACKPRESSURE_WAIT_SECS")]
    pub backpressure_wait_secs: Option<u64>,
    /// WAL segment size in MiB [default: 64].
    #[arg(long, env = "CORRAL_WAL_SEGMENT_MB")]
    pub wal_segment_mb: Option<u64>,
    /// Largest accepted request body in bytes (413 above) [default: 16777216].
    #[arg(long, env = "CORRAL_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// SQL query timeout in seconds [default: 30].
    #[arg(long, env = "CORRAL_QUERY_TIMEOUT_SECS")]
    pub query_timeout_secs: Option<u64>,
    /// Most rows in a JSON query answer [default: 100000].
    #[arg(long, env = "CORRAL_MAX_QUERY_ROWS")]
    pub max_query_rows: Option<usize>,
    /// Memory all running SQL queries may hold together, MiB [default: 512].
    #[arg(long, env = "CORRAL_QUERY_MEMORY_MB")]
    pub query_memory_mb: Option<usize>,
    /// Most columns one telemetry table may grow to [default: 1000].
    #[arg(long, env = "CORRAL_MAX_COLUMNS_PER_TABLE")]
    pub max_columns_per_table: Option<usize>,
    /// MQTT 3.1.1/5.0 listener, or `off` [default: 0.0.0.0:1883]. Port 0 picks a free port.
    #[arg(long, env = "CORRAL_MQTT")]
    pub mqtt: Option<String>,
    /// Open mode for labs and interoperability tests: clients without credentials may connect and
    /// use any topic outside `devices/` [default: off].
    #[arg(long, env = "CORRAL_MQTT_ALLOW_ANONYMOUS")]
    pub mqtt_allow_anonymous: bool,
    /// Largest MQTT packet accepted, bytes [default: 1048576].
    #[arg(long, env = "CORRAL_MQTT_MAX_PACKET_BYTES")]
    pub mqtt_max_packet_bytes: Option<u32>,
    /// Most MQTT connections at once [default: 100000].
    #[arg(long, env = "CORRAL_MQTT_MAX_CONNECTIONS")]
    pub mqtt_max_connections: Option<usize>,
    /// Most undelivered QoS 1/2 messages one session queues; the oldest are dropped beyond it
    /// [default: 1000].
    #[arg(long, env = "CORRAL_MQTT_MAX_QUEUED")]
    pub mqtt_max_queued: Option<usize>,
    /// Messages per second one MQTT client may publish, 0 = unlimited; a faster client is slowed
    /// down (the broker stops reading it), not disconnected [default: 0].
    #[arg(long, env = "CORRAL_MQTT_PUBLISH_RATE")]
    pub mqtt_publish_rate: Option<u32>,
    /// CoAP listener (UDP), or `off` [default: 0.0.0.0:5683]. Port 0 picks a free port.
    #[arg(long, env = "CORRAL_COAP")]
    pub coap: Option<String>,
    /// CoAP over DTLS listener (UDP; devices use their pre-shared key, identity = device id),
    /// or `off` [default: 0.0.0.0:5684].
    #[arg(long, env = "CORRAL_COAPS")]
    pub coaps: Option<String>,
    /// MQTT over TLS listener; on only with --tls-cert and --tls-key [default: 0.0.0.0:8883].
    #[arg(long, env = "CORRAL_MQTTS")]
    pub mqtts: Option<String>,
    /// PEM certificate chain (server certificate first) for MQTTS and HTTPS.
    #[arg(long, env = "CORRAL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate (keep it mode 0600).
    #[arg(long, env = "CORRAL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Webhook targets allowed although private or loopback (comma-separated IPs, CIDRs, host
    /// names or *.domains), added to rules.webhooks.allow.
    #[arg(long, env = "CORRAL_WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<String>,
    /// Delivery attempts before an action goes to the dead-letter state.
    #[arg(long, env = "CORRAL_OUTBOX_MAX_ATTEMPTS")]
    pub outbox_max_attempts: Option<u32>,
    /// First retry delay of a failed delivery in milliseconds (doubles per attempt, with jitter).
    #[arg(long, env = "CORRAL_OUTBOX_RETRY_BASE_MS")]
    pub outbox_retry_base_ms: Option<u64>,
    /// How often absence rules look at the clock, in milliseconds.
    #[arg(long, env = "CORRAL_ABSENCE_CHECK_MS")]
    pub absence_check_ms: Option<u64>,
}

impl ServeArgs {
    /// The effective config: these flags/env over the file over the defaults, validated.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => load_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.http {
            config.http = v.clone();
        }
        if let Some(v) = &self.log {
            config.log = v.clone();
        }
        let s = &mut config.storage;
        s.buffer_ceiling_mb = self.buffer_ceiling_mb.unwrap_or(s.buffer_ceiling_mb);
        s.persist_mb = self.persist_mb.unwrap_or(s.persist_mb);
        s.persist_age_secs = self.persist_age_secs.unwrap_or(s.persist_age_secs);
        s.backpressure_wait_secs = self.backpressure_wait_secs.unwrap_or(s.backpressure_wait_secs);
        s.wal_segment_mb = self.wal_segment_mb.unwrap_or(s.wal_segment_mb);
        let l = &mut config.limits;
        l.max_body_bytes = self.max_body_bytes.unwrap_or(l.max_body_bytes);
        l.query_timeout_secs = self.query_timeout_secs.unwrap_or(l.query_timeout_secs);
        l.max_query_rows = self.max_query_rows.unwrap_or(l.max_query_rows);
        l.query_memory_mb = self.query_memory_mb.unwrap_or(l.query_memory_mb);
        l.max_columns_per_table = self.max_columns_per_table.unwrap_or(l.max_columns_per_table);
        let m = &mut config.mqtt;
        if let Some(v) = &self.mqtt {
            m.listen = v.clone();
        }
        m.allow_anonymous |= self.mqtt_allow_anonymous;
        m.max_packet_bytes = self.mqtt_max_packet_bytes.unwrap_or(m.max_packet_bytes);
        m.max_connections = self.mqtt_max_connections.unwrap_or(m.max_connections);
        m.max_queued_messages = self.mqtt_max_queued.unwrap_or(m.max_queued_messages);
        m.publish_rate = self.mqtt_publish_rate.unwrap_or(m.publish_rate);
        if let Some(v) = &self.mqtts {
            m.tls_listen = v.clone();
        }
        m.tls_cert = self.tls_cert.clone().or(m.tls_cert.take());
        m.tls_key = self.tls_key.clone().or(m.tls_key.take());
        if let Some(v) = &self.coap {
            config.coap.listen = v.clone();
        }
        if let Some(v) = &self.coaps {
            config.coap.dtls_listen = v.clone();
        }
        let r = &mut config.rules;
        r.webhooks.allow.extend(self.webhook_allow.iter().filter(|a| !a.is_empty()).cloned());
        r.outbox.max_attempts = self.outbox_max_attempts.unwrap_or(r.outbox.max_attempts);
        r.outbox.retry_base_ms = self.outbox_retry_base_ms.unwrap_or(r.outbox.retry_base_ms);
        r.absence_check_ms = self.absence_check_ms.unwrap_or(r.absence_check_ms);
        if let Some(v) = &self.https {
            config.https = v.clone();
        }
        if self.https.is_some() && config.mqtt.tls_cert.is_none() {
            bail!("--https needs a certificate: --tls-cert and --tls-key (PEM files)");
        }
        if self.mqtts.is_some() && config.mqtt.tls_cert.is_none() {
            bail!("--mqtts needs a certificate: --tls-cert and --tls-key (PEM files)");
        }
        config.validate()?;
        Ok(config)
    }
}

/// `key = "path"`, or the key commented out with an example when unset.
fn optional_path(key: &str, path: &Option<PathBuf>, example: &str) -> String {
    match path {
        Some(p) => format!("{key} = {:?}", p.display().to_string()),
        None => format!("# {key} = {example:?}"),
    }
}

fn load_file(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.http_addr()?;
        let s = &self.storage;
        if s.buffer_ceiling_mb == 0 || s.persist_mb == 0 || s.persist_mb > s.buffer_ceiling_mb {
            bail!("storage: need 0 < persist_mb ({}) <= buffer_ceiling_mb ({})", s.persist_mb, s.buffer_ceiling_mb);
        }
        if s.persist_age_secs == 0 || s.wal_segment_mb == 0 {
            bail!("storage: persist_age_secs and wal_segment_mb must be positive");
        }
        let l = &self.limits;
        if l.max_body_bytes < 1024 || l.query_timeout_secs == 0 || l.max_query_rows == 0 {
            bail!("limits: max_body_bytes must be >= 1024, query_timeout_secs and max_query_rows positive");
        }
        if l.query_memory_mb < 16 || l.max_columns_per_table < 8 {
            bail!("limits: query_memory_mb must be >= 16 and max_columns_per_table >= 8");
        }
        self.mqtt_addr()?;
        let m = &self.mqtt;
        if m.max_packet_bytes < 64 || m.max_connections == 0 || m.max_inflight == 0 || m.max_queued_messages == 0 {
            bail!("mqtt: max_packet_bytes must be >= 64; max_connections, max_inflight, max_queued_messages positive");
        }
        if m.tls_cert.is_some() != m.tls_key.is_some() {
            bail!("mqtt: tls_cert and tls_key go together (PEM certificate chain and its private key)");
        }
        if m.tls_cert.is_some() {
            crate::tls::listen_addr(&m.tls_listen)?;
            self.https_addr()?;
        }
        self.coap_addr()?;
        self.coaps_addr()?;
        let c = &self.coap;
        if c.max_body_bytes < 1024 {
            bail!("coap: max_body_bytes must be >= 1024");
        }
        if c.dtls_max_sessions == 0 || c.dtls_idle_secs == 0 {
            bail!("coap: dtls_max_sessions and dtls_idle_secs must be positive");
        }
        c.server().validate().map_err(|e| anyhow::anyhow!("coap: {e}"))?;
        let r = &self.rules;
        r.webhooks.validate().map_err(|e| anyhow::anyhow!("rules.webhooks: {e}"))?;
        let o = &r.outbox;
        if o.max_attempts == 0
            || o.retry_base_ms == 0
            || o.retry_max_ms < o.retry_base_ms
            || o.concurrency == 0
            || o.timeout_ms == 0
        {
            bail!(
                "rules.outbox: max_attempts, retry_base_ms, concurrency and timeout_ms must be positive, retry_max_ms >= retry_base_ms"
            );
        }
        if r.absence_check_ms < 10 || r.queue == 0 || r.linger_ms > 1_000 || r.offline_after_ms == 0 {
            bail!("rules: absence_check_ms must be >= 10, queue and offline_after_ms positive, linger_ms at most 1000");
        }
        Ok(())
    }

    /// The MQTT listener's address, `None` when it is `off`.
    pub fn mqtt_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.mqtt.listen == "off" {
            return Ok(None);
        }
        let addr = self.mqtt.listen.parse();
        Ok(Some(
            addr.with_context(|| format!("mqtt.listen: {:?} is not an address like 0.0.0.0:1883 or `off`", self.mqtt.listen))?,
        ))
    }

    /// The CoAP listener's address, `None` when it is `off`.
    pub fn coap_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.coap.listen == "off" {
            return Ok(None);
        }
        let addr = self.coap.listen.parse();
        Ok(Some(
            addr.with_context(|| format!("coap.listen: {:?} is not an address like 0.0.0.0:5683 or `off`", self.coap.listen))?,
        ))
    }

    /// The CoAP over DTLS listener's address, `None` when it is `off`.
    pub fn coaps_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.coap.dtls_listen == "off" {
            return Ok(None);
        }
        let addr = self.coap.dtls_listen.parse();
        Ok(Some(addr.with_context(|| {
            format!("coap.dtls_listen: {:?} is not an address like 0.0.0.0:5684 or `off`", self.coap.dtls_listen)
        })?))
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.http.parse().with_context(|| format!("http: {:?} is not an address like 0.0.0.0:8080", self.http))
    }

    /// The HTTPS listener's address: `None` without a certificate, or when `off`.
    pub fn https_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.mqtt.tls_cert.is_none() || self.https == "off" {
            return Ok(None);
        }
        let addr = self.https.parse();
        Ok(Some(addr.with_context(|| format!("https: {:?} is not an address like 0.0.0.0:8443 or `off`", self.https))?))
    }

    /// The effective config as commented TOML, ready to save as a config file.
    pub fn render(&self) -> String {
        let s = &self.storage;
        let l = &self.limits;
        format!(
            "# Corral effective configuration (flag > CORRAL_* env > this file > default)\n\
             # Directory for the registry (registry.db), WAL (store/wal) and Parquet (store/tables).\n\
             data_dir = {data_dir:?}\n\
             # HTTP listener: REST API, ingest, SQL, /metrics. Port 0 picks a free port.\n\
             http = {http:?}\n\
             # HTTPS listener (\"off\" disables it): the same routes over TLS; devices may ingest with a client\n\
             # certificate instead of a token. On only when [mqtt] tls_cert and tls_key are set.\n\
             https = {https:?}\n\
             # Log filter (tracing EnvFilter syntax).\n\
             log = {log:?}\n\n\
             [storage]\n\
             # Memory ceiling of the write buffer; above it writers wait, then get 503 + Retry-After.\n\
             buffer_ceiling_mb = {ceiling}\n\
             # Persist the buffer to Parquet when it holds this much...\n\
             persist_mb = {persist}\n\
             # ...or when its oldest row is this old.\n\
             persist_age_secs = {age}\n\
             # How long a writer waits at the ceiling before it gets 503.\n\
             backpressure_wait_secs = {wait}\n\
             # WAL segment size.\n\
             wal_segment_mb = {segment}\n\n\
             [limits]\n\
             # Largest request body (413 above it).\n\
             max_body_bytes = {body}\n\
             query_timeout_secs = {timeout}\n\
             # Most rows in one JSON query answer (\"truncated\": true beyond).\n\
             max_query_rows = {rows}\n\
             # Memory all running queries may hold together; beyond it a query fails with a clear error.\n\
             query_memory_mb = {query_memory}\n\
             # A telemetry table never grows beyond this many columns (400 for the request that would).\n\
             max_columns_per_table = {max_columns}\n\n\
             [mqtt]\n\
             # MQTT 3.1.1/5.0 over TCP (\"off\" disables it; also MQTT over WebSocket at /mqtt on the HTTP listener).\n\
             listen = {mqtt_listen:?}\n\
             # Open mode for labs: clients without credentials may use topics outside devices/.\n\
             allow_anonymous = {mqtt_anonymous}\n\
             # Largest packet accepted (v5 clients are told; larger ones get DISCONNECT 0x95).\n\
             max_packet_bytes = {mqtt_packet}\n\
             max_connections = {mqtt_connections}\n\
             # QoS 1/2 messages in flight to one client.\n\
             max_inflight = {mqtt_inflight}\n\
             # Undelivered QoS 1/2 messages one session keeps (oldest dropped and counted beyond it).\n\
             max_queued_messages = {mqtt_queued}\n\
             # Messages per second one client may publish; 0 = unlimited. Faster clients are slowed down.\n\
             publish_rate = {mqtt_rate}\n\
             # MQTT over TLS: listens on tls_listen once both PEM files are set (HTTPS uses them too).\n\
             tls_listen = {tls_listen:?}\n\
             {tls_cert}\n\
             {tls_key}\n\n\
             [coap]\n\
             # CoAP over UDP (\"off\" disables it): POST devices/<id>/telemetry?t=<token>, Observe devices/<id>/commands.\n\
             listen = {coap_listen:?}\n\
             # CoAP over DTLS (coaps, \"off\" disables it): a device handshakes with PSK identity = its id and the key\n\
             # set by `corral device psk <id>`; its requests then need no token.\n\
             dtls_listen = {coaps_listen:?}\n\
             # DTLS sessions at once, and seconds an established one lives unheard of (sleepy devices keep theirs).\n\
             dtls_max_sessions = {coaps_sessions}\n\
             dtls_idle_secs = {coaps_idle}\n\
             # Largest request body, whole or assembled from Block1 blocks (4.13 above it).\n\
             max_body_bytes = {coap_body}\n\
             # A Confirmable request not durable within this gets an empty ACK and a separate response later.\n\
             piggyback_wait_ms = {coap_wait}\n\
             # Block size of answers, and the largest block taken from a client (16..1024).\n\
             block_bytes = {coap_block}\n\
             # Requests processed at once; beyond it Confirmable requests get 5.03 (Max-Age 1).\n\
             max_in_flight = {coap_in_flight}\n\
             # Devices observing their commands at once (each device keeps its newest observation).\n\
             max_observers = {coap_observers}\n\
             # Commands kept in memory per CoAP device until fetched, and for how long.\n\
             max_pending_commands = {coap_pending}\n\
             command_ttl_secs = {coap_ttl}\n\n\
             [rules]\n\
             # How often absence rules (\"no data for 15m\") look at the clock, in milliseconds.\n\
             absence_check_ms = {absence}\n\
             # Durable batches waiting for rule evaluation; beyond it ingest waits (never drops).\n\
             queue = {rules_queue}\n\
             # Milliseconds a rules pass gathers data after its first message: under load, few large\n\
             # passes cost far less than many small ones. 0 evaluates every message at once.\n\
             linger_ms = {linger}\n\
             # A device without an MQTT connection is offline this long after it was last heard from,\n\
             # unless an absence rule covering it (\"no data for 15m\") sets its own window.\n\
             offline_after_ms = {offline_after}\n\n\
             [rules.webhooks]\n\
             # Private, loopback and link-local webhook targets are refused unless allowed here\n\
             # (IPs, CIDRs, host names, *.domains). Deny entries always win.\n\
             allow = {allow:?}\n\
             deny = {deny:?}\n\
             allow_private = {allow_private}\n\n\
             [rules.outbox]\n\
             # Attempts before an action goes to the dead-letter state (GET /api/v1/outbox?state=dead).\n\
             max_attempts = {max_attempts}\n\
             # Retry delays double from retry_base_ms up to retry_max_ms, with jitter.\n\
             retry_base_ms = {retry_base}\n\
             retry_max_ms = {retry_max}\n\
             # Deliveries in flight at once, and the timeout of each.\n\
             concurrency = {concurrency}\n\
             timeout_ms = {delivery_timeout}\n",
            data_dir = self.data_dir.display().to_string(),
            http = self.http,
            https = self.https,
            log = self.log,
            ceiling = s.buffer_ceiling_mb,
            persist = s.persist_mb,
            age = s.persist_age_secs,
            wait = s.backpressure_wait_secs,
            segment = s.wal_segment_mb,
            body = l.max_body_bytes,
            timeout = l.query_timeout_secs,
            rows = l.max_query_rows,
            query_memory = l.query_memory_mb,
            max_columns = l.max_columns_per_table,
            mqtt_listen = self.mqtt.listen,
            mqtt_anonymous = self.mqtt.allow_anonymous,
            mqtt_packet = self.mqtt.max_packet_bytes,
            mqtt_connections = self.mqtt.max_connections,
            mqtt_inflight = self.mqtt.max_inflight,
            mqtt_queued = self.mqtt.max_queued_messages,
            mqtt_rate = self.mqtt.publish_rate,
            tls_listen = self.mqtt.tls_listen,
            tls_cert = optional_path("tls_cert", &self.mqtt.tls_cert, "/etc/corral/mqtt-cert.pem"),
            tls_key = optional_path("tls_key", &self.mqtt.tls_key, "/etc/corral/mqtt-key.pem"),
            coap_listen = self.coap.listen,
            coaps_listen = self.coap.dtls_listen,
            coaps_sessions = self.coap.dtls_max_sessions,
            coaps_idle = self.coap.dtls_idle_secs,
            coap_body = self.coap.max_body_bytes,
            coap_wait = self.coap.piggyback_wait_ms,
            coap_block = self.coap.block_bytes,
            coap_in_flight = self.coap.max_in_flight,
            coap_observers = self.coap.max_observers,
            coap_pending = self.coap.max_pending_commands,
            coap_ttl = self.coap.command_ttl_secs,
            absence = self.rules.absence_check_ms,
            rules_queue = self.rules.queue,
            linger = self.rules.linger_ms,
            offline_after = self.rules.offline_after_ms,
            allow = self.rules.webhooks.allow,
            deny = self.rules.webhooks.deny,
            allow_private = self.rules.webhooks.allow_private,
            max_attempts = self.rules.outbox.max_attempts,
            retry_base = self.rules.outbox.retry_base_ms,
            retry_max = self.rules.outbox.retry_max_ms,
            concurrency = self.rules.outbox.concurrency,
            delivery_timeout = self.rules.outbox.timeout_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_default_and_render_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.toml");
        std::fs::write(&path, "http = \"127.0.0.1:9000\"\nlog = \"debug\"\n[storage]\npersist_mb = 8\n").unwrap();
        let args = ServeArgs { config: Some(path.clone()), log: Some("warn".into()), ..Default::default() };
        let config = args.resolve().unwrap();
        assert_eq!(config.http, "127.0.0.1:9000"); // file over default
        assert_eq!(config.log, "warn"); // flag over file
        assert_eq!(config.storage.persist_mb, 8);
        assert_eq!(config.storage.buffer_ceiling_mb, 256); // default
        std::fs::write(&path, config.render()).unwrap();
        let again = ServeArgs { config: Some(path), ..Default::default() }.resolve().unwrap();
        assert_eq!(again.render(), config.render());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.toml");
        std::fs::write(&path, "htp = \"x\"\n").unwrap();
        let err = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        let err = ServeArgs { http: Some("nonsense".into()), ..Default::default() }.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("nonsense"));
    }
}
