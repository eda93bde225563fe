//! The command line's part of the configuration: the named flags of the common settings (each
//! with its own environment variable), `--set` for any key, and how they are laid over the file.

use super::{Config, settings};
use anyhow::{Context, bail};
use clap::Args;
use std::path::{Path, PathBuf};

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
    /// PostgreSQL wire protocol listener for psql and BI tools, or `off` [default: 0.0.0.0:5433].
    /// User: an API token's name or `token`; password: the token.
    #[arg(long, env = "CORRAL_PG")]
    pub pg: Option<String>,
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
    /// e.g. 0.0.0.0:5684; off unless given [default: off].
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
    /// Any setting by its key, as `corral config` prints it: `--set coap.max_observers=50000`
    /// (repeatable; beats every other source). Every key also has an environment variable:
    /// `CORRAL_` + the key in upper case with `.` as `_` (`CORRAL_COAP_MAX_OBSERVERS`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// `corral config`: the effective settings, or the table of every setting for the docs.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Print every setting as a Markdown table (key, environment variable, default, meaning)
    /// instead of the effective configuration.
    #[arg(long)]
    pub markdown: bool,
}

impl ServeArgs {
    /// The effective config: these flags/env over the file over the defaults, validated.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => load_file(path)?,
            None => Config::default(),
        };
        config = settings::from_environment(config, |name| std::env::var(name).ok())?;
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
        if let Some(v) = &self.pg {
            config.pg.listen = v.clone();
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
        // Asking for a TLS listener without a certificate is a mistake worth stopping for;
        // `off` is not asking for one.
        let asked = |flag: &Option<String>| flag.as_deref().is_some_and(|v| v != "off");
        if asked(&self.https) && config.mqtt.tls_cert.is_none() {
            bail!("--https needs a certificate: --tls-cert and --tls-key (PEM files)");
        }
        if asked(&self.mqtts) && config.mqtt.tls_cert.is_none() {
            bail!("--mqtts needs a certificate: --tls-cert and --tls-key (PEM files)");
        }
        for assignment in &self.set {
            let (key, value) = assignment
                .split_once('=')
                .with_context(|| format!("--set {assignment:?}: write KEY=VALUE, e.g. --set coap.max_observers=50000"))?;
            config = settings::set(config, key.trim(), value).with_context(|| format!("--set {assignment:?}"))?;
        }
        config.validate()?;
        Ok(config)
    }
}

fn load_file(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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

    #[test]
    fn set_names_any_key_and_beats_the_named_flag() {
        let args = ServeArgs {
            persist_mb: Some(8),
            set: vec![
                "storage.persist_mb=16".into(),
                "coap.max_observers=7".into(),
                "rules.webhooks.allow=a.example,b.example".into(),
            ],
            ..Default::default()
        };
        let config: Config = args.resolve().unwrap();
        assert_eq!(config.storage.persist_mb, 16);
        assert_eq!(config.coap.max_observers, 7);
        assert_eq!(config.rules.webhooks.allow, ["a.example", "b.example"]);
        let err = ServeArgs { set: vec!["coap.max_observrs=7".into()], ..Default::default() }.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("unknown setting `coap.max_observrs`"), "{err:#}");
        let err = ServeArgs { set: vec!["coap.max_observers=many".into()], ..Default::default() }.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("coap.max_observers"), "{err:#}");
    }
}
