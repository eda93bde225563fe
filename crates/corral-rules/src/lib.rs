//! Rules, alarms and actions: the room on the data path that reacts.
//!
//! ```text
//! pipeline ──(durable batches)──► Rules::observe ──► rules task: evaluate ──► alarm book ──► rules.db
//!                                                      (vectorized, per table)      │  (alarms + outbox,
//!                       clock ──► absence checks ──────────────┘                    │   one transaction)
//!                                              corral-outbox delivery loop ◄───────┘
//!                                  deliver::Actions: webhook (signed) · NATS · MQTT republish · device command
//! ```
//!
//! A rule is a SQL boolean expression over a message's fields and its device's attributes
//! (`temperature > 8 AND attributes.cargo = 'vaccines'`), optionally held for a while (`for`),
//! over per-device windows (`avg(temperature) over 10m > 6`), or an absence (`no data for 15m`).
//! Each (rule, device) has at most one open alarm; its lifecycle is active → acknowledged →
//! cleared. Lifecycle events are published on MQTT `alarms/<tenant>/<device>` and hand their
//! actions to a durable outbox that delivers at least once.
//!
//! The binary wires it: the pipeline's observer calls [`Rules::observe`] after each durable write;
//! [`Platform`] gives the engine device facts from the registry and an MQTT publisher.
//!
//! ```no_run
//! use corral_rules::RuleBook;
//! # async fn t(platform: std::sync::Arc<dyn corral_rules::Platform>, commands: std::sync::Arc<dyn corral_services::IssueCommands>) -> Result<(), corral_rules::RulesError> {
//! let rules = corral_rules::Rules::open(std::path::Path::new("rules.db"), Default::default(), platform, commands,
//!     std::sync::Arc::new(corral_services::SystemClock)).await?;
//! let spec = serde_json::from_value(serde_json::json!({
//!     "name": "vaccines too warm", "condition": "temperature > 8 AND attributes.cargo = 'vaccines'",
//!     "clear": "temperature < 7", "for": "5m", "severity": "critical",
//!     "actions": [{"type": "webhook", "url": "https://ops.example.com/hooks/corral"}]})).unwrap();
//! let created = rules.create_rule(spec, "alice", None).await?;
//! # Ok(()) }
//! ```

mod alarm;
mod api;
mod condition;
mod db;
pub mod deliver;
mod engine;
mod error;
mod metrics;
mod online;
mod outbox;
mod service;
mod spec;
mod sql;
mod task;
mod window;

pub use alarm::{Alarm, AlarmStatus};
pub use api::{AlarmFilter, Comment, Rule};
pub use deliver::policy::TargetPolicy;
pub use engine::DeviceFacts;
pub use error::RulesError;
pub use online::{OfflineWindows, Online};
pub use outbox::{Entry as OutboxEntry, OutboxConfig};
pub use service::{AlarmBoard, Deliveries, RuleBook, RulesService};
pub use spec::{ActionSpec, AlarmEvent, RuleSpec, Scope, Severity};
pub use sql::AlarmsTable;

use async_trait::async_trait;
use corral_model::{Batch, Envelope};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// What the rules room needs from the rest of the platform; implemented by the binary.
#[async_trait]
pub trait Platform: Send + Sync + 'static {
    /// A registered device, or `None` (then no rule applies to it).
    async fn device(&self, id: &str) -> Option<DeviceFacts>;
    /// Every registered, active device (absence rules watch them).
    async fn devices(&self) -> Vec<DeviceFacts>;
    /// Publishes on the MQTT broker as the platform (QoS 1) on behalf of `tenant`, so that
    /// tenant-scoped subscribers receive it; resolves once routed.
    async fn publish(&self, topic: &str, payload: Vec<u8>, tenant: &str) -> Result<(), String>;
    /// The current fields of a telemetry table, when it exists (to catch misspelt fields).
    fn table_fields(&self, table: &str) -> Option<Vec<String>>;
}

/// The `[rules]` section of the server config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Which webhook targets are allowed; private, loopback and link-local addresses are refused
    /// unless listed in `webhooks.allow` (or `webhooks.allow_private = true`).
    pub webhooks: TargetPolicy,
    /// How actions are delivered and retried.
    pub outbox: OutboxConfig,
    /// How often absence rules ("no data for 15m") look at the clock, in milliseconds.
    pub absence_check_ms: u64,
    /// Durable batches waiting for evaluation before ingest waits (backpressure, not loss).
    pub queue: usize,
    /// How long the rules task gathers data after the first message of a pass, in milliseconds.
    /// Each rule costs a little per pass whatever its size, so under load a few milliseconds of
    /// gathering turn many small passes into a few large ones; 0 evaluates each message at once.
    pub linger_ms: u64,
    /// A device not connected over MQTT is offline this long after it was last heard from,
    /// unless an absence rule covering it says otherwise (see `online`).
    pub offline_after_ms: u64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            webhooks: TargetPolicy::default(),
            outbox: OutboxConfig::default(),
            absence_check_ms: 5_000,
            queue: 1_024,
            linger_ms: 5,
            offline_after_ms: 600_000,
        }
    }
}

/// Durable rows handed to the rules task.
struct Observation {
    received_at_ns: i64,
    batches: Vec<Batch>,
}

/// The rules room: cheap to clone, one per server.
#[derive(Clone)]
pub struct Rules {
    inner: Arc<task::Shared>,
    queue: mpsc::Sender<Observation>,
    offline_after_ns: i64,
}

impl Rules {
    /// Opens `path` (created if missing), loads rules and open alarms, and starts the rules task
    /// and the outbox deliverer.
    pub async fn open(
        path: &Path,
        config: RulesConfig,
        platform: Arc<dyn Platform>,
        commands: Arc<dyn corral_services::IssueCommands>,
        clock: Arc<dyn corral_services::Clock>,
    ) -> Result<Rules, RulesError> {
        config.webhooks.validate().map_err(|e| RulesError::invalid(format!("rules.webhooks: {e}")))?;
        let pool = db::open(path).await?;
        let metrics = Arc::new(metrics::Metrics::default());
        let retry = config.outbox.retry_policy();
        let outbox = Arc::new(corral_outbox::Outbox::open(pool.clone(), retry, clock.clone(), &outbox::METRIC_NAMES).await?);
        let shared = Arc::new(task::Shared::load(pool, platform.clone(), clock, metrics, outbox.clone()).await?);
        let (queue, observations) = mpsc::channel(config.queue.max(1));
        let attempt_timeout = std::time::Duration::from_millis(config.outbox.timeout_ms);
        let actions = deliver::Actions {
            webhook: deliver::webhook::WebhookClient::new(config.webhooks.clone(), attempt_timeout)
                .map_err(RulesError::Invalid)?,
            nats: deliver::nats::NatsPublisher::new(attempt_timeout),
            platform,
            commands,
        };
        tokio::spawn(outbox.run(actions));
        let timing = task::Timing {
            absence_every: std::time::Duration::from_millis(config.absence_check_ms.max(10)),
            linger: std::time::Duration::from_millis(config.linger_ms),
        };
        tokio::spawn(task::run(shared.clone(), observations, timing));
        let offline_after_ns = i64::try_from(config.offline_after_ms).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
        Ok(Rules { inner: shared, queue, offline_after_ns })
    }

    /// The offline windows in force now, to tell which devices are online.
    pub async fn offline_windows(&self) -> OfflineWindows {
        let state = self.inner.state.lock().await;
        OfflineWindows::new(state.engine.absence_windows(), self.offline_after_ns)
    }

    /// Runs the absence checks now, as the rules task does every `absence_check_ms`: with the
    /// time of the clock the rules were given, so a test can move the clock and check at once.
    pub async fn check_absence(&self) {
        task::check_absence(&self.inner).await;
    }

    /// Whether any enabled rule exists: when not, the pipeline need not copy batches for us.
    pub fn wants(&self) -> bool {
        self.inner.enabled.load(Ordering::Relaxed) > 0
    }

    /// Hands durable batches to the rules task. Waits (backpressure on ingest) when evaluation is
    /// behind by more than the configured queue, rather than dropping or growing without bound.
    pub async fn observe(&self, envelope: &Envelope, batches: Vec<Batch>) {
        self.inner.unsettled.fetch_add(1, Ordering::AcqRel);
        let observation = Observation { received_at_ns: envelope.received_at_ns, batches };
        match self.queue.try_send(observation) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(observation)) => {
                self.inner.metrics.ingest_waits.fetch_add(1, Ordering::Relaxed);
                if self.queue.send(observation).await.is_err() {
                    self.inner.unsettled.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.inner.unsettled.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Waits (up to `limit`) until every batch handed over so far is evaluated and its alarms and
    /// outbox entries are committed. Called at shutdown, after ingest has stopped, so a graceful
    /// stop loses no evaluation.
    pub async fn settle(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.inner.unsettled.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Prometheus lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        self.inner.metrics.render_prometheus(out, &self.inner.outbox);
    }
}

/// The pipeline hands every durable batch to the rules.
#[async_trait]
impl corral_ingest::Observer for Rules {
    fn wants(&self) -> bool {
        Rules::wants(self)
    }

    async fn observe(&self, envelope: &Envelope, batches: Vec<Batch>) {
        Rules::observe(self, envelope, batches).await;
    }
}

/// `/metrics` lines for rules, alarms and the outbox.
impl corral_services::MetricsSource for Rules {
    fn render(&self, out: &mut String) {
        self.render_metrics(out);
    }
}

/// Rule id of the alarms the platform raises about itself (no rule has id 0).
pub const PLATFORM_RULE_ID: i64 = 0;

/// Platform alarms go through the same book as the rules' alarms: listed, acknowledged, stored
/// and published on MQTT the same way; they have no actions.
#[async_trait]
impl corral_services::PlatformAlarms for Rules {
    async fn raise(&self, key: &str, tenant: Option<&str>, title: &str, message: &str) {
        let raise = alarm::Transition::Raise {
            rule_id: PLATFORM_RULE_ID,
            rule: title.to_string(),
            severity: Severity::Major,
            message: message.to_string(),
            tenant: tenant.unwrap_or_default().to_string(),
            device: key.to_string(),
            at_ns: self.inner.clock.now_ns(),
            values: serde_json::json!({ "error": message }),
        };
        let state = self.inner.state.lock().await;
        self.inner.settle(&state.engine, vec![raise]).await;
    }

    async fn clear(&self, key: &str) {
        let clear =
            alarm::Transition::Clear { rule_id: PLATFORM_RULE_ID, device: key.to_string(), at_ns: self.inner.clock.now_ns() };
        let state = self.inner.state.lock().await;
        self.inner.settle(&state.engine, vec![clear]).await;
    }
}
