//! What people and programs do with rules, alarms and the outbox, as traits: the REST API and
//! the console hold an `Arc<dyn RulesService>`, never the engine. [`crate::Rules`] implements
//! them (`api.rs`, `outbox.rs`).
//!
//! `tenant` is always the caller's scope: a tenant-scoped caller sees and touches only its
//! tenant's rules, alarms and deliveries; everything else answers "not found", so ids of other
//! tenants do not leak.

use crate::api::{AlarmFilter, Comment, Rule};
use crate::{Alarm, OutboxEntry as Entry, RuleSpec, RulesError};
use async_trait::async_trait;

/// Rules, alarms and deliveries together: what `serve` hands the REST API and the console.
pub trait RulesService: RuleBook + AlarmBoard + Deliveries {}

impl<T: RuleBook + AlarmBoard + Deliveries> RulesService for T {}

/// Rules as people and programs manage them.
#[async_trait]
pub trait RuleBook: Send + Sync {
    /// Validates and stores a rule; it applies to the next message. Webhook actions without a
    /// secret get a generated one, returned here (and by `replace_rule`) once, unredacted.
    async fn create_rule(&self, spec: RuleSpec, by: &str, tenant: Option<&str>) -> Result<Rule, RulesError>;

    /// Replaces a rule's definition. Devices' pending `for` timers and windows start afresh;
    /// open alarms stay open. A webhook given without a secret keeps the one it had.
    async fn replace_rule(&self, id: i64, spec: RuleSpec, by: &str, tenant: Option<&str>) -> Result<Rule, RulesError>;

    /// Removes a rule; its open alarms are cleared, recording who removed it.
    async fn delete_rule(&self, id: i64, by: &str, tenant: Option<&str>) -> Result<(), RulesError>;

    /// Every rule `tenant` may see (all of them for an unscoped caller), secrets redacted.
    async fn rules(&self, tenant: Option<&str>) -> Result<Vec<Rule>, RulesError>;

    /// A rule as the API shows it (secrets redacted), if `tenant` may see it.
    async fn rule(&self, id: i64, tenant: Option<&str>) -> Result<Rule, RulesError>;
}

/// Alarms as operators work them: list, read, acknowledge, clear, comment.
#[async_trait]
pub trait AlarmBoard: Send + Sync {
    /// Alarms matching the filter (its tenant is the caller's scope), newest first.
    async fn alarms(&self, f: &AlarmFilter) -> Result<Vec<Alarm>, RulesError>;

    /// One alarm and its comments, if `tenant` may see it.
    async fn alarm(&self, id: i64, tenant: Option<&str>) -> Result<(Alarm, Vec<Comment>), RulesError>;

    /// Acknowledges an alarm (open or already cleared); acknowledging twice changes nothing.
    async fn acknowledge(&self, id: i64, by: &str, tenant: Option<&str>) -> Result<Alarm, RulesError>;

    /// Clears an open alarm by hand. The rule raises a new one only after its condition has been
    /// false again (otherwise a clear of a still-true condition would bounce straight back).
    async fn clear(&self, id: i64, by: &str, tenant: Option<&str>) -> Result<Alarm, RulesError>;

    /// Adds an operator's comment to an alarm's history.
    async fn comment(&self, id: i64, by: &str, text: &str, tenant: Option<&str>) -> Result<Comment, RulesError>;
}

/// What the alarms' actions sent, or failed to send, through the outbox.
#[async_trait]
pub trait Deliveries: Send + Sync {
    /// Outbox entries, newest first, by state (`pending`, `delivered`, `dead`).
    async fn outbox(
        &self,
        state: Option<&str>,
        tenant: Option<&str>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Entry>, RulesError>;

    /// Puts a dead (or pending) entry back in line for immediate delivery, with a fresh budget.
    async fn retry_delivery(&self, id: i64, tenant: Option<&str>) -> Result<Entry, RulesError>;
}
