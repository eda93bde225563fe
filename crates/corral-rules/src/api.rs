//! What people and programs do with rules and alarms: [`RuleBook`] and [`AlarmBoard`] for
//! [`Rules`] (the outbox's calls are in `outbox.rs`).
//! `tenant` is the caller's scope: a tenant-scoped caller sees and touches only its tenant's
//! rules and alarms; everything else answers "not found", so ids of other tenants do not leak.

use crate::alarm::{Alarm, AlarmStatus};
use crate::engine::ActiveRule;
use crate::error::RulesError;
use crate::service::{AlarmBoard, RuleBook};
use crate::spec::{ActionSpec, AlarmEvent, RuleSpec};
use crate::{Rules, db};
use async_trait::async_trait;
use serde::Serialize;
use sqlx::{Row, SqlitePool};
use std::sync::atomic::Ordering;

/// A stored rule: its spec (webhook secrets shown as `********`) with its id and history.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Rule {
    pub id: i64,
    #[serde(flatten)]
    pub spec: RuleSpec,
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub created_at: String,
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub updated_at: String,
    /// The token or user that created it.
    pub created_by: String,
}

/// A comment on an alarm.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Comment {
    pub id: i64,
    pub alarm_id: i64,
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub at: String,
    /// The token or user that wrote it.
    pub author: String,
    pub text: String,
}

/// Which alarms to list, newest first. `before` is the id to continue after (pagination).
#[derive(Debug, Clone, Default)]
pub struct AlarmFilter {
    pub tenant: Option<String>,
    pub device: Option<String>,
    pub rule_id: Option<i64>,
    pub status: Option<AlarmStatus>,
    /// Only alarms not cleared.
    pub open: bool,
    pub severity: Option<String>,
    pub limit: usize,
    pub before: Option<i64>,
}

pub(crate) async fn load_specs(pool: &SqlitePool) -> Result<Vec<(i64, RuleSpec)>, RulesError> {
    let rows = sqlx::query("SELECT id, spec FROM rules ORDER BY id").fetch_all(pool).await?;
    let mut out = Vec::new();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let spec: String = row.try_get("spec")?;
        match serde_json::from_str(&spec) {
            Ok(spec) => out.push((id, spec)),
            Err(e) => tracing::error!(rule = id, error = %e, "stored rule unreadable; skipped"),
        }
    }
    Ok(out)
}

fn rule_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Rule, RulesError> {
    let spec: String = row.try_get("spec")?;
    let ms = |name: &str| -> Result<String, RulesError> { Ok(crate::alarm::format_ns(row.try_get::<i64, _>(name)? * 1_000_000)) };
    Ok(Rule {
        id: row.try_get("id")?,
        spec: serde_json::from_str(&spec).map_err(|e| RulesError::invalid(format!("stored rule unreadable: {e}")))?,
        created_at: ms("created_at")?,
        updated_at: ms("updated_at")?,
        created_by: row.try_get("created_by")?,
    })
}

impl Rule {
    fn redacted(mut self) -> Rule {
        self.spec.actions = self.spec.actions.iter().map(ActionSpec::redacted).collect();
        self
    }
}

fn visible(rule_tenant: Option<&str>, scope: Option<&str>) -> bool {
    scope.is_none_or(|s| rule_tenant == Some(s))
}

#[async_trait]
impl RuleBook for Rules {
    async fn create_rule(&self, mut spec: RuleSpec, by: &str, tenant: Option<&str>) -> Result<Rule, RulesError> {
        self.prepare(&mut spec, tenant, None)?;
        let now = self.inner.clock.now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO rules (name, tenant, spec, created_at, updated_at, created_by) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&spec.name)
        .bind(&spec.tenant)
        .bind(serde_json::to_string(&spec).expect("spec serializes"))
        .bind(now)
        .bind(now)
        .bind(by)
        .fetch_one(&self.inner.pool)
        .await?;
        self.activate(id, spec.clone()).await?;
        tracing::info!(rule = id, name = %spec.name, by, "rule created");
        self.stored_rule(id).await?.ok_or_else(|| RulesError::NotFound(format!("rule {id}")))
    }

    async fn replace_rule(&self, id: i64, mut spec: RuleSpec, by: &str, tenant: Option<&str>) -> Result<Rule, RulesError> {
        let old = self.rule(id, tenant).await?;
        let previous = self.stored_rule(id).await?.map(|r| r.spec);
        self.prepare(&mut spec, tenant, previous.as_ref())?;
        sqlx::query("UPDATE rules SET name = ?, tenant = ?, spec = ?, updated_at = ? WHERE id = ?")
            .bind(&spec.name)
            .bind(&spec.tenant)
            .bind(serde_json::to_string(&spec).expect("spec serializes"))
            .bind(self.inner.clock.now_ms())
            .bind(old.id)
            .execute(&self.inner.pool)
            .await?;
        self.activate(id, spec).await?;
        tracing::info!(rule = id, by, "rule replaced");
        self.stored_rule(id).await?.ok_or_else(|| RulesError::NotFound(format!("rule {id}")))
    }

    async fn delete_rule(&self, id: i64, by: &str, tenant: Option<&str>) -> Result<(), RulesError> {
        self.rule(id, tenant).await?;
        sqlx::query("DELETE FROM rules WHERE id = ?").bind(id).execute(&self.inner.pool).await?;
        let mut state = self.inner.state.lock().await;
        state.engine.remove(id);
        self.inner.enabled.store(state.engine.enabled(), Ordering::Relaxed);
        self.inner.metrics.forget_rule(id);
        let now = self.inner.clock.now_ns();
        let cleared: Vec<_> = {
            let mut book = self.inner.book.lock().expect("book lock");
            let ids: Vec<i64> = book.open_alarms().filter(|a| a.rule_id == id).map(|a| a.id).collect();
            ids.into_iter().filter_map(|a| book.clear(a, &format!("rule deleted by {by}"), now)).collect()
        };
        // The rule's actions are gone with it; the clears are still written and announced.
        self.inner.commit(&state.engine, cleared.into_iter().map(|a| (AlarmEvent::Cleared, a)).collect()).await;
        tracing::info!(rule = id, by, "rule deleted");
        Ok(())
    }

    async fn rules(&self, tenant: Option<&str>) -> Result<Vec<Rule>, RulesError> {
        let rows = sqlx::query("SELECT * FROM rules WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id")
            .bind(tenant)
            .fetch_all(&self.inner.pool)
            .await?;
        rows.iter().map(|r| rule_from_row(r).map(Rule::redacted)).collect()
    }

    async fn rule(&self, id: i64, tenant: Option<&str>) -> Result<Rule, RulesError> {
        let rule = self.stored_rule(id).await?.ok_or_else(|| RulesError::NotFound(format!("rule {id}")))?;
        if !visible(rule.spec.tenant.as_deref(), tenant) {
            return Err(RulesError::NotFound(format!("rule {id}")));
        }
        Ok(rule.redacted())
    }
}

#[async_trait]
impl AlarmBoard for Rules {
    async fn alarms(&self, f: &AlarmFilter) -> Result<Vec<Alarm>, RulesError> {
        let rows = sqlx::query(
            "SELECT * FROM alarms WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR device = ?2) AND (?3 IS NULL OR rule_id = ?3)
               AND (?4 IS NULL OR status = ?4) AND (?5 = 0 OR status != 'cleared') AND (?6 IS NULL OR severity = ?6)
               AND (?7 IS NULL OR id < ?7)
             ORDER BY id DESC LIMIT ?8",
        )
        .bind(&f.tenant)
        .bind(&f.device)
        .bind(f.rule_id)
        .bind(f.status.map(AlarmStatus::as_str))
        .bind(f.open)
        .bind(&f.severity)
        .bind(f.before)
        .bind(f.limit.clamp(1, 1_000) as i64)
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(rows.iter().map(db::alarm_from_row).collect::<Result<_, _>>()?)
    }

    async fn alarm(&self, id: i64, tenant: Option<&str>) -> Result<(Alarm, Vec<Comment>), RulesError> {
        let open = self.inner.book.lock().expect("book lock").get(id).cloned();
        if let Some(open) = open {
            if visible(Some(&open.tenant), tenant) {
                return Ok((open, self.comments(id).await?));
            }
            return Err(RulesError::NotFound(format!("alarm {id}")));
        }
        let row = sqlx::query("SELECT * FROM alarms WHERE id = ?").bind(id).fetch_optional(&self.inner.pool).await?;
        let alarm = row.as_ref().map(db::alarm_from_row).transpose()?.filter(|a| visible(Some(&a.tenant), tenant));
        let alarm = alarm.ok_or_else(|| RulesError::NotFound(format!("alarm {id}")))?;
        Ok((alarm, self.comments(id).await?))
    }

    async fn acknowledge(&self, id: i64, by: &str, tenant: Option<&str>) -> Result<Alarm, RulesError> {
        let (alarm, _) = self.alarm(id, tenant).await?;
        if alarm.acknowledged_at.is_some() {
            return Ok(alarm);
        }
        let now = self.inner.clock.now_ns();
        let acked = self.inner.book.lock().expect("book lock").acknowledge(id, by, now);
        match acked {
            Some(acked) => {
                let state = self.inner.state.lock().await;
                self.inner.commit(&state.engine, vec![(AlarmEvent::Acknowledged, acked.clone())]).await;
                Ok(acked)
            }
            None => {
                sqlx::query(
                    "UPDATE alarms SET acknowledged_by = ?, acknowledged_at = ? WHERE id = ? AND acknowledged_at IS NULL",
                )
                .bind(by)
                .bind(now)
                .bind(id)
                .execute(&self.inner.pool)
                .await?;
                Ok(self.alarm(id, tenant).await?.0)
            }
        }
    }

    async fn clear(&self, id: i64, by: &str, tenant: Option<&str>) -> Result<Alarm, RulesError> {
        let (alarm, _) = self.alarm(id, tenant).await?;
        if alarm.status == AlarmStatus::Cleared {
            return Err(RulesError::Conflict(format!("alarm {id} is already cleared")));
        }
        let now = self.inner.clock.now_ns();
        let cleared = self.inner.book.lock().expect("book lock").clear(id, by, now);
        let cleared = cleared.ok_or_else(|| RulesError::Conflict(format!("alarm {id} is already cleared")))?;
        let state = self.inner.state.lock().await;
        self.inner.commit(&state.engine, vec![(AlarmEvent::Cleared, cleared.clone())]).await;
        Ok(cleared)
    }

    async fn comment(&self, id: i64, by: &str, text: &str, tenant: Option<&str>) -> Result<Comment, RulesError> {
        let text = text.trim();
        if text.is_empty() || text.len() > 4_000 {
            return Err(RulesError::invalid("text: a comment has 1 to 4000 characters"));
        }
        self.alarm(id, tenant).await?;
        // The alarm row must exist before a comment can reference it.
        {
            let state = self.inner.state.lock().await;
            self.inner.commit(&state.engine, Vec::new()).await;
        }
        let at = self.inner.clock.now_ms();
        let comment_id: i64 =
            sqlx::query_scalar("INSERT INTO alarm_comments (alarm_id, at, author, text) VALUES (?, ?, ?, ?) RETURNING id")
                .bind(id)
                .bind(at)
                .bind(by)
                .bind(text)
                .fetch_one(&self.inner.pool)
                .await?;
        Ok(Comment {
            id: comment_id,
            alarm_id: id,
            at: crate::alarm::format_ns(at * 1_000_000),
            author: by.to_string(),
            text: text.to_string(),
        })
    }
}

impl Rules {
    /// A rule as stored, secrets included.
    async fn stored_rule(&self, id: i64) -> Result<Option<Rule>, RulesError> {
        let row = sqlx::query("SELECT * FROM rules WHERE id = ?").bind(id).fetch_optional(&self.inner.pool).await?;
        row.as_ref().map(rule_from_row).transpose()
    }

    fn prepare(&self, spec: &mut RuleSpec, tenant: Option<&str>, previous: Option<&RuleSpec>) -> Result<(), RulesError> {
        match (tenant, spec.tenant.as_deref()) {
            (Some(scope), Some(t)) if t != scope => {
                return Err(RulesError::Forbidden(format!(
                    "your token is scoped to tenant `{scope}`; it cannot write rules for `{t}`"
                )));
            }
            (Some(scope), _) => spec.tenant = Some(scope.to_string()),
            (None, _) => {}
        }
        spec.name = spec.name.trim().to_string();
        for action in &mut spec.actions {
            if let ActionSpec::Webhook { url, secret, .. } = action
                && secret.as_deref().is_none_or(|s| s == "********")
            {
                let kept = previous.into_iter().flat_map(|p| &p.actions).find_map(|a| match a {
                    ActionSpec::Webhook { url: u, secret: Some(s), .. } if u == url => Some(s.clone()),
                    _ => None,
                });
                *secret = Some(kept.unwrap_or_else(|| format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()))));
            }
        }
        // Validated after the secrets are filled in: a spec edited from what GET showed carries
        // the redacted placeholder, which stands for the stored secret.
        let fields = self.inner.platform.table_fields(&spec.table);
        spec.validate(fields.as_deref()).map_err(RulesError::Invalid)?;
        Ok(())
    }

    async fn activate(&self, id: i64, spec: RuleSpec) -> Result<(), RulesError> {
        let rule = ActiveRule::new(id, spec, &self.inner.metrics).map_err(RulesError::Invalid)?;
        let mut state = self.inner.state.lock().await;
        let open: Vec<String> = self
            .inner
            .book
            .lock()
            .expect("book lock")
            .open_alarms()
            .filter(|a| a.rule_id == id)
            .map(|a| a.device.clone())
            .collect();
        state.engine.upsert(rule);
        for device in &open {
            state.engine.mark_raised(id, device);
        }
        self.inner.enabled.store(state.engine.enabled(), Ordering::Relaxed);
        self.inner.forget_facts();
        Ok(())
    }

    async fn comments(&self, id: i64) -> Result<Vec<Comment>, RulesError> {
        let rows = sqlx::query("SELECT * FROM alarm_comments WHERE alarm_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(&self.inner.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Comment {
                    id: r.try_get("id")?,
                    alarm_id: r.try_get("alarm_id")?,
                    at: crate::alarm::format_ns(r.try_get::<i64, _>("at")? * 1_000_000),
                    author: r.try_get("author")?,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }
}
