//! The rules' use of the durable outbox (`corral-outbox`): every action an alarm event triggers
//! is enqueued in the same transaction as the alarm change (`task.rs`), then delivered at least
//! once by the shared delivery loop through [`crate::deliver::Actions`]. This module holds what
//! is the rules' own: the config, what an entry stores as its target, how an entry looks in
//! `GET /api/v1/outbox`, the metric names, and the list and retry calls of the API.

use crate::Rules;
use crate::alarm::Alarm;
use crate::error::RulesError;
use crate::service::Deliveries;
use crate::spec::{ActionSpec, AlarmEvent};
use async_trait::async_trait;
use corral_outbox::{Family, ListFilter, MetricNames, NewEntry, Record, RetryPolicy, Scope, State};
use serde::{Deserialize, Serialize};

/// How deliveries are retried. Defaults suit production; tests shorten them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Attempts before an action goes to the dead-letter state (GET /api/v1/outbox?state=dead).
    pub max_attempts: u32,
    /// Delay before the first retry, ms; doubles per attempt (with jitter) up to `retry_max_ms`.
    pub retry_base_ms: u64,
    /// Longest delay between retries, ms.
    pub retry_max_ms: u64,
    /// Deliveries in flight at once (across all targets).
    pub concurrency: usize,
    /// Timeout of one webhook POST or NATS publish, ms.
    pub timeout_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig { max_attempts: 12, retry_base_ms: 1_000, retry_max_ms: 600_000, concurrency: 64, timeout_ms: 10_000 }
    }
}

impl OutboxConfig {
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            base_ms: self.retry_base_ms,
            max_ms: self.retry_max_ms,
            concurrency: self.concurrency,
        }
    }
}

/// The owner kind of the rules' entries: their owner id is the alarm's id.
pub(crate) const OWNER_KIND: &str = "alarm";

/// The outbox's `/metrics` families, as docs/rules.md lists them.
pub(crate) static METRIC_NAMES: MetricNames = MetricNames {
    pending: Family { name: "corral_outbox_pending", help: "Actions waiting for delivery (including retries)." },
    delivered: Family { name: "corral_outbox_delivered_total", help: "Actions delivered." },
    failed_attempts: Family { name: "corral_outbox_failed_attempts_total", help: "Delivery attempts that failed." },
    dead: Family { name: "corral_outbox_dead_total", help: "Actions given up on (dead letters)." },
    delivery_seconds: Family { name: "corral_outbox_delivery_seconds", help: "From the alarm event to its delivery." },
    kind_label: "action",
};

/// What an entry stores as its target: the action (secrets included, a webhook is signed with
/// them), the device the alarm is about (commands go to it) and the rule, for the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Target {
    pub spec: ActionSpec,
    pub device: String,
    pub rule_id: i64,
}

/// The entry for one action of an alarm event. `index` is the action's place in the rule, so
/// the key is stable: the same event never enqueues the same action twice.
pub(crate) fn entry(event: AlarmEvent, alarm: &Alarm, index: usize, action: &ActionSpec, payload: &str) -> NewEntry<Target> {
    NewEntry {
        idempotency_key: format!("alarm-{}-{}-{index}", alarm.id, event.as_str()),
        owner_kind: OWNER_KIND,
        owner_id: alarm.id,
        tenant: Some(alarm.tenant.clone()),
        event: event.as_str().to_string(),
        target: Target { spec: action.clone(), device: alarm.device.clone(), rule_id: alarm.rule_id },
        payload: payload.to_string(),
    }
}

/// An entry as the API shows it (secrets redacted): one action of one alarm event.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Entry {
    pub id: i64,
    /// Unique per delivery, `alarm-<alarm>-<event>-<action index>`; receivers use it to drop
    /// duplicates (delivery is at least once).
    pub idempotency_key: String,
    pub alarm_id: i64,
    pub rule_id: i64,
    /// The alarm event that triggered it.
    #[schemars(with = "AlarmEvent")]
    pub event: String,
    pub action: ActionSpec,
    /// `pending` (waiting or retrying), `delivered` or `dead` (given up on).
    #[schemars(extend("enum" = ["pending", "delivered", "dead"]))]
    pub state: String,
    /// Delivery attempts made since it was created or last retried.
    pub attempts: i64,
    /// When the next attempt is due.
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub next_attempt_at: String,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub created_at: String,
    #[schemars(with = "corral_model::schema::Rfc3339OrNull")]
    pub delivered_at: Option<String>,
}

fn ms_text(ms: i64) -> String {
    crate::alarm::format_ns(ms.saturating_mul(1_000_000))
}

impl TryFrom<Record> for Entry {
    type Error = RulesError;

    fn try_from(r: Record) -> Result<Entry, RulesError> {
        let target: Target = r.target().map_err(|e| RulesError::Storage(sqlx::Error::Decode(Box::new(e))))?;
        Ok(Entry {
            id: r.id,
            idempotency_key: r.idempotency_key,
            alarm_id: r.owner_id,
            rule_id: target.rule_id,
            event: r.event,
            action: target.spec.redacted(),
            state: r.state.as_str().to_string(),
            attempts: r.attempts,
            next_attempt_at: ms_text(r.next_attempt_at_ms),
            last_error: r.last_error,
            created_at: ms_text(r.created_at_ms),
            delivered_at: r.delivered_at_ms.map(ms_text),
        })
    }
}

/// The entries a caller scoped to `tenant` (or to none) may see: the alarms' entries.
fn scope(tenant: Option<&str>) -> Scope<'_> {
    Scope { owner_kind: Some(OWNER_KIND), tenant }
}

#[async_trait]
impl Deliveries for Rules {
    async fn outbox(
        &self,
        state: Option<&str>,
        tenant: Option<&str>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Entry>, RulesError> {
        let state = match state.map(State::parse) {
            Some(None) => return Ok(Vec::new()),
            Some(Some(s)) => Some(s),
            None => None,
        };
        let filter = ListFilter { scope: scope(tenant), state, limit, before };
        self.inner.outbox.list(&filter).await?.into_iter().map(Entry::try_from).collect()
    }

    async fn retry_delivery(&self, id: i64, tenant: Option<&str>) -> Result<Entry, RulesError> {
        self.inner.outbox.retry(id, scope(tenant)).await?.try_into()
    }
}
