//! The durable outbox: every action an alarm event triggers is first committed here (in the same
//! transaction as the alarm change), then delivered by [`Deliverer`] — at least once, retried with
//! exponential backoff and jitter, and parked as `dead` after the attempt limit, where the API
//! shows it and an operator can retry it. Each entry carries an idempotency key that receivers
//! use to drop the duplicates a crash between delivery and bookkeeping can cause.

use crate::Platform;
use crate::deliver::AttemptError;
use crate::deliver::nats::NatsPublisher;
use crate::deliver::webhook::WebhookClient;
use crate::metrics::Metrics;
use crate::spec::{ActionSpec, AlarmEvent};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

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

/// An entry about to be committed.
pub struct NewEntry {
    pub idempotency_key: String,
    pub alarm_id: i64,
    pub rule_id: i64,
    pub event: AlarmEvent,
    pub action: ActionSpec,
    /// The event as JSON: the webhook body, the MQTT and NATS payload.
    pub payload: String,
    /// The device the alarm is about (commands go to it).
    pub device: String,
}

/// An entry as the API shows it (secrets redacted).
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: i64,
    pub idempotency_key: String,
    pub alarm_id: i64,
    pub rule_id: i64,
    pub event: String,
    pub action: ActionSpec,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

fn ms_text(ms: i64) -> String {
    crate::alarm::format_ns(ms.saturating_mul(1_000_000))
}

pub async fn enqueue(tx: &mut Transaction<'_, Sqlite>, entries: &[NewEntry], now: i64) -> Result<(), sqlx::Error> {
    for e in entries {
        // The device rides along inside the stored action JSON so a command knows its target.
        let action = serde_json::json!({"spec": e.action, "device": e.device}).to_string();
        sqlx::query(
            "INSERT INTO outbox (idempotency_key, alarm_id, rule_id, event, action, payload, state, next_attempt_at, created_at)
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&e.idempotency_key)
        .bind(e.alarm_id)
        .bind(e.rule_id)
        .bind(e.event.as_str())
        .bind(action)
        .bind(&e.payload)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub fn entry_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Entry, sqlx::Error> {
    let action: String = row.try_get("action")?;
    let stored: StoredAction = serde_json::from_str(&action).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Entry {
        id: row.try_get("id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        alarm_id: row.try_get("alarm_id")?,
        rule_id: row.try_get("rule_id")?,
        event: row.try_get("event")?,
        action: stored.spec.redacted(),
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: ms_text(row.try_get("next_attempt_at")?),
        last_error: row.try_get("last_error")?,
        created_at: ms_text(row.try_get("created_at")?),
        delivered_at: row.try_get::<Option<i64>, _>("delivered_at")?.map(ms_text),
    })
}

#[derive(Deserialize)]
struct StoredAction {
    spec: ActionSpec,
    device: String,
}

/// One due entry, loaded for delivery.
struct Due {
    id: i64,
    key: String,
    event: String,
    action: StoredAction,
    payload: String,
    attempts: i64,
    created_at: i64,
}

/// Delivers due outbox entries until the process ends. One per server.
pub struct Deliverer {
    pub pool: SqlitePool,
    pub config: OutboxConfig,
    pub webhook: WebhookClient,
    pub nats: NatsPublisher,
    pub platform: Arc<dyn Platform>,
    /// Command actions go to the devices through it, whatever their door.
    pub commands: Arc<dyn corral_services::Commands>,
    /// When entries are due and delivered.
    pub clock: Arc<dyn corral_services::Clock>,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

type Outcome = (Due, Result<(), AttemptError>);

impl Deliverer {
    pub async fn run(self) {
        let mut inflight = FuturesUnordered::new();
        let mut busy: HashSet<i64> = HashSet::new();
        loop {
            let room = self.config.concurrency.saturating_sub(busy.len());
            let mut next_due = None;
            if room > 0 {
                match self.due(room + busy.len()).await {
                    Ok((due, next)) => {
                        next_due = next;
                        let fresh: Vec<Due> = due.into_iter().filter(|d| !busy.contains(&d.id)).take(room).collect();
                        for d in fresh {
                            busy.insert(d.id);
                            inflight.push(self.attempt(d));
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "reading the outbox failed; retrying in 1 s"),
                }
            }
            let sleep = next_due.map_or(Duration::from_secs(1), |at: i64| {
                Duration::from_millis((at - self.clock.now_ms()).clamp(1, 1_000) as u64)
            });
            tokio::select! {
                Some(first) = inflight.next(), if !inflight.is_empty() => {
                    // Record every outcome that is ready in one transaction: at thousands of
                    // deliveries a second, one fsync each would be the bottleneck.
                    let mut done = vec![first];
                    while let Some(Some(more)) = futures::FutureExt::now_or_never(inflight.next()) {
                        done.push(more);
                    }
                    for (d, _) in &done {
                        busy.remove(&d.id);
                    }
                    if let Err(e) = self.record(done).await {
                        tracing::error!(error = %e, "recording deliveries failed; they will be delivered again");
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Up to `limit` due entries, and when the next not-yet-due one is.
    async fn due(&self, limit: usize) -> Result<(Vec<Due>, Option<i64>), sqlx::Error> {
        let now = self.clock.now_ms();
        let rows = sqlx::query(
            "SELECT id, idempotency_key, event, action, payload, attempts, created_at FROM outbox
             WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            let action: String = row.try_get("action")?;
            let Ok(action) = serde_json::from_str::<StoredAction>(&action) else {
                tracing::error!(id = row.try_get::<i64, _>("id")?, "unreadable outbox action; skipped");
                continue;
            };
            due.push(Due {
                id: row.try_get("id")?,
                key: row.try_get("idempotency_key")?,
                event: row.try_get("event")?,
                action,
                payload: row.try_get("payload")?,
                attempts: row.try_get("attempts")?,
                created_at: row.try_get("created_at")?,
            });
        }
        let next: Option<i64> =
            sqlx::query("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending' AND next_attempt_at > ?")
                .bind(now)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok((due, next))
    }

    fn attempt(&self, d: Due) -> impl Future<Output = Outcome> + Send + 'static {
        let webhook = self.webhook.clone();
        let nats = self.nats.clone();
        let platform = self.platform.clone();
        let commands = self.commands.clone();
        async move {
            let event = format!("alarm.{}", d.event);
            let result = match &d.action.spec {
                ActionSpec::Webhook { url, secret, .. } => {
                    webhook.post(url, secret.as_deref().unwrap_or_default(), &d.key, &event, d.payload.as_bytes()).await
                }
                ActionSpec::Nats { url, subject, .. } => {
                    let alarm: serde_json::Value = serde_json::from_str(&d.payload).unwrap_or_default();
                    let subject = expand_from(subject, &alarm, &d.event);
                    nats.publish(url, &subject, &d.key, d.payload.as_bytes()).await
                }
                ActionSpec::Mqtt { topic, .. } => {
                    let event: serde_json::Value = serde_json::from_str(&d.payload).unwrap_or_default();
                    let topic = expand_from(topic, &event, &d.event);
                    let tenant = event["alarm"]["tenant"].as_str().unwrap_or_default();
                    platform.publish(&topic, d.payload.clone().into_bytes(), tenant).await.map_err(AttemptError::retry)
                }
                ActionSpec::Command { name, payload, .. } => {
                    let event: serde_json::Value = serde_json::from_str(&d.payload).unwrap_or_default();
                    let body = if payload.is_null() { d.payload.clone() } else { payload.to_string() };
                    let tenant = event["alarm"]["tenant"].as_str().and_then(|t| corral_model::TenantId::new(t).ok());
                    match corral_model::DeviceId::new(d.action.device.as_str()) {
                        Ok(device) => {
                            let command = corral_services::Command::new(device, tenant, name.as_str(), body.into_bytes(), None);
                            commands.send(command).await.map_err(|e| AttemptError::retry(e.message))
                        }
                        Err(e) => Err(AttemptError::permanent(format!("command for {}: {e}", d.action.device))),
                    }
                }
            };
            (d, result)
        }
    }

    async fn record(&self, done: Vec<Outcome>) -> Result<(), sqlx::Error> {
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        for (d, result) in &done {
            let kind = d.action.spec.kind();
            match result {
                Ok(()) => {
                    sqlx::query("UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?, last_error = NULL WHERE id = ?")
                        .bind(now)
                        .bind(d.id)
                        .execute(&mut *tx)
                        .await?;
                    self.metrics.delivered(kind, (now - d.created_at).max(0) as f64 / 1000.0);
                }
                Err(e) => {
                    let attempts = d.attempts + 1;
                    let dead = !e.retryable || attempts >= i64::from(self.config.max_attempts);
                    let next = now + self.backoff_ms(attempts);
                    sqlx::query("UPDATE outbox SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?")
                        .bind(if dead { "dead" } else { "pending" })
                        .bind(attempts)
                        .bind(next)
                        .bind(&e.message)
                        .bind(d.id)
                        .execute(&mut *tx)
                        .await?;
                    self.metrics.failed(kind, dead);
                    if dead {
                        tracing::warn!(id = d.id, key = %d.key, action = kind, attempts, error = %e, "delivery dead-lettered");
                    } else {
                        tracing::info!(id = d.id, action = kind, attempts, error = %e, "delivery failed; will retry");
                    }
                }
            }
        }
        tx.commit().await
    }

    /// Exponential backoff with "equal jitter": half the delay fixed, half random, so receivers
    /// coming back from an outage are not hit by every sender at the same instant.
    fn backoff_ms(&self, attempts: i64) -> i64 {
        let exp = attempts.clamp(1, 30) - 1;
        let full = self.config.retry_base_ms.saturating_mul(1u64 << exp).min(self.config.retry_max_ms).max(1);
        let half = full / 2;
        (half + rand::random_range(0..=full - half)) as i64
    }
}

/// Expands a topic or subject template from the event JSON.
fn expand_from(template: &str, event: &serde_json::Value, kind: &str) -> String {
    let alarm = &event["alarm"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    crate::spec::expand(template, &s(&alarm["device"]), &s(&alarm["tenant"]), &s(&alarm["rule"]), kind)
}
