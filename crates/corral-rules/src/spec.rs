//! What a rule says, as people write it (REST body, `corral rule add` file), and its validation.
//! Every error names the field, and for conditions the position of the mistake.

use crate::condition::Condition;
use crate::window::parse_duration_ns;
use serde::{Deserialize, Serialize};

/// A rule as submitted. `condition` rules watch each message; `absence` rules watch the clock:
/// give exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// 1 to 128 characters (trimmed).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The tenant whose devices the rule watches; null: every tenant (unscoped tokens only). A
    /// tenant-scoped token's rules are always its own tenant's.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Narrows the devices within the tenant; empty: all of them.
    #[serde(default)]
    pub scope: Scope,
    /// The telemetry table whose messages the condition reads.
    #[serde(default = "default_table")]
    pub table: String,
    /// SQL boolean expression over fields, `attributes.<name>` and windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Clears the alarm (hysteresis); without it the alarm clears when `condition` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<String>,
    /// The condition must hold this long, continuously, before the alarm is raised (`5m`).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// No data from a device for this long raises the alarm (`15m`); data clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absence: Option<String>,
    #[serde(default)]
    pub severity: Severity,
    /// The alarm's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What happens on the alarm's events: at most 16 actions.
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
    /// A disabled rule raises no alarms.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_table() -> String {
    "telemetry".into()
}
fn yes() -> bool {
    true
}

/// Which devices a rule watches, narrowed within its tenant. Empty: all of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// One device's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// How serious an alarm is.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Major,
    Minor,
    #[default]
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// The moments of an alarm's life an action can follow.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlarmEvent {
    Raised,
    Acknowledged,
    Cleared,
}

impl AlarmEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmEvent::Raised => "raised",
            AlarmEvent::Acknowledged => "acknowledged",
            AlarmEvent::Cleared => "cleared",
        }
    }
}

fn raised_only() -> Vec<AlarmEvent> {
    vec![AlarmEvent::Raised]
}

/// How long a rule's command waits for its device by default: five minutes, long enough for a
/// device on a flaky link to come back, short enough that a stale command is not obeyed later.
fn command_timeout_s() -> u64 {
    300
}

/// Where an alarm event goes. `topic` and `subject` may use `{device}`, `{tenant}`, `{rule}` and
/// `{event}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionSpec {
    /// JSON POST signed with HMAC-SHA256 (`X-Corral-Signature`). A secret is generated when
    /// none is given, returned once, and never shown again.
    Webhook {
        url: String,
        /// The signing secret. Answers show it as `********`; sending `********` back (or no
        /// secret) keeps the stored one for the same URL, or generates one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
        /// The alarm events that trigger it.
        #[serde(default = "raised_only")]
        on: Vec<AlarmEvent>,
    },
    /// Republish the event on an MQTT topic.
    Mqtt {
        topic: String,
        /// The alarm events that trigger it.
        #[serde(default = "raised_only")]
        on: Vec<AlarmEvent>,
    },
    /// Send a tracked command to the device (`name`, `payload`; see docs/commands.md), which waits
    /// for it up to `timeout_s` when it is away.
    Command {
        name: String,
        #[serde(default)]
        payload: serde_json::Value,
        /// Seconds the device has to answer.
        #[serde(default = "command_timeout_s")]
        timeout_s: u64,
        /// The alarm events that trigger it.
        #[serde(default = "raised_only")]
        on: Vec<AlarmEvent>,
    },
    /// Publish the event to a NATS subject.
    Nats {
        url: String,
        subject: String,
        /// The alarm events that trigger it.
        #[serde(default = "raised_only")]
        on: Vec<AlarmEvent>,
    },
}

impl ActionSpec {
    pub fn on(&self) -> &[AlarmEvent] {
        match self {
            ActionSpec::Webhook { on, .. }
            | ActionSpec::Mqtt { on, .. }
            | ActionSpec::Command { on, .. }
            | ActionSpec::Nats { on, .. } => on,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ActionSpec::Webhook { .. } => "webhook",
            ActionSpec::Mqtt { .. } => "mqtt",
            ActionSpec::Command { .. } => "command",
            ActionSpec::Nats { .. } => "nats",
        }
    }

    /// The action as the API shows it after creation: secrets hidden.
    pub fn redacted(&self) -> ActionSpec {
        match self {
            ActionSpec::Webhook { url, secret, on } => {
                ActionSpec::Webhook { url: url.clone(), secret: secret.as_ref().map(|_| "********".to_string()), on: on.clone() }
            }
            other => other.clone(),
        }
    }
}

/// At most this many actions per rule: each raised alarm writes one outbox entry per action.
const MAX_ACTIONS: usize = 16;

/// Expands `{device}`, `{tenant}`, `{rule}` and `{event}` in a topic or subject template.
pub fn expand(template: &str, device: &str, tenant: &str, rule: &str, event: &str) -> String {
    template.replace("{device}", device).replace("{tenant}", tenant).replace("{rule}", rule).replace("{event}", event)
}

impl RuleSpec {
    /// Whether the rule watches this device: its tenant, then every part of the scope.
    pub fn covers(&self, facts: &crate::DeviceFacts) -> bool {
        let Scope { profile, site, tag, device } = &self.scope;
        self.tenant.as_ref().is_none_or(|t| *t == facts.tenant)
            && profile.as_ref().is_none_or(|p| facts.profile.as_ref() == Some(p))
            && site.as_ref().is_none_or(|s| facts.site.as_ref() == Some(s))
            && tag.as_ref().is_none_or(|t| facts.tags.contains(t))
            && device.as_ref().is_none_or(|d| *d == facts.id)
    }

    /// Checks everything that can be checked without data. `known_fields` lists the table's
    /// current fields when the table exists, so a misspelt field is caught now, not never.
    pub fn validate(&self, known_fields: Option<&[String]>) -> Result<(), String> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 128 {
            return Err("name: give the rule a name of 1 to 128 characters".into());
        }
        corral_model::TableName::new(&self.table).map_err(|e| format!("table: {e}"))?;
        if let Some(id) = &self.scope.device {
            corral_model::DeviceId::new(id).map_err(|e| format!("scope.device: {e}"))?;
        }
        match (&self.condition, &self.absence) {
            (Some(_), Some(_)) => return Err("give either `condition` or `absence`, not both".into()),
            (None, None) => {
                return Err("a rule needs a `condition` (e.g. \"temperature > 8\") or an `absence` (e.g. \"15m\")".into());
            }
            (None, Some(a)) => {
                parse_duration_ns(a).map_err(|e| format!("absence: {e}"))?;
                if self.clear.is_some() || self.hold.is_some() {
                    return Err("`clear` and `for` apply to condition rules; an absence clears when data arrives".into());
                }
            }
            (Some(c), None) => {
                let condition = Condition::parse(c).map_err(|e| format!("condition: {e}"))?;
                check_fields("condition", &condition, known_fields)?;
                if let Some(clear) = &self.clear {
                    let clear = Condition::parse(clear).map_err(|e| format!("clear: {e}"))?;
                    check_fields("clear", &clear, known_fields)?;
                }
                if let Some(hold) = &self.hold {
                    parse_duration_ns(hold).map_err(|e| format!("for: {e}"))?;
                }
            }
        }
        if self.actions.len() > MAX_ACTIONS {
            return Err(format!("actions: at most {MAX_ACTIONS} per rule"));
        }
        for (i, action) in self.actions.iter().enumerate() {
            validate_action(action).map_err(|e| format!("actions[{i}] ({}): {e}", action.kind()))?;
        }
        Ok(())
    }
}

fn check_fields(what: &str, condition: &Condition, known: Option<&[String]>) -> Result<(), String> {
    let Some(known) = known else { return Ok(()) };
    let fields = condition.inputs.iter().filter_map(|i| match i {
        crate::condition::Input::Field(f) => Some(f.as_str()),
        _ => None,
    });
    let windows = condition.windows.iter().map(|w| w.field.as_str());
    for field in fields.chain(windows) {
        if field != "time" && field != "device" && !known.iter().any(|k| k == field) {
            let mut list = known.join(", ");
            if list.len() > 300 {
                list.truncate(300);
                list.push_str(", ...");
            }
            return Err(format!("{what}: the table has no field `{field}` (its fields: {list})"));
        }
    }
    Ok(())
}

fn validate_action(action: &ActionSpec) -> Result<(), String> {
    if action.on().is_empty() {
        return Err("`on` lists no event; use [\"raised\"], [\"cleared\"] or [\"acknowledged\"]".into());
    }
    match action {
        ActionSpec::Webhook { url, secret, .. } => {
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("url `{url}`: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(format!("url `{url}` must be http:// or https:// with a host"));
            }
            if secret.as_ref().is_some_and(|s| s.len() < 16) {
                return Err("secret must have at least 16 characters (or leave it out and one is generated)".into());
            }
        }
        ActionSpec::Mqtt { topic, .. } => {
            if topic.is_empty() || topic.contains(['+', '#', '\0']) || topic.starts_with('$') {
                return Err(format!("topic `{topic}` must be a plain topic name (no wildcards, not $-prefixed)"));
            }
        }
        ActionSpec::Command { name, timeout_s, .. } => {
            corral_model::DeviceId::new(name).map_err(|_| format!("name `{name}`: use 1-128 of A-Z a-z 0-9 . _ -"))?;
            if *timeout_s == 0 || *timeout_s > 7 * 24 * 3600 {
                return Err(format!("timeout_s {timeout_s}: a command waits between 1 second and 7 days"));
            }
        }
        ActionSpec::Nats { url, subject, .. } => {
            if url.trim().is_empty() {
                return Err("url: give the NATS server, e.g. nats://127.0.0.1:4222".into());
            }
            if subject.is_empty() || subject.contains([' ', '\t', '*', '>']) {
                return Err(format!("subject `{subject}` must be a plain subject (no spaces or wildcards)"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> RuleSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_good_rule_validates() {
        let r = spec(serde_json::json!({"name": "warm vaccines", "condition": "temperature > 8", "clear": "temperature < 7",
            "for": "5m", "severity": "critical", "actions": [{"type": "webhook", "url": "https://example.com/hook"}]}));
        r.validate(Some(&["temperature".into()])).unwrap();
        assert_eq!(r.table, "telemetry");
        assert_eq!(r.actions[0].on(), &[AlarmEvent::Raised]);
    }

    #[test]
    fn errors_point_at_the_mistake() {
        let err = |j: serde_json::Value| spec(j).validate(Some(&["temperature".into()])).unwrap_err();
        assert!(err(serde_json::json!({"name": "x"})).contains("needs a `condition`"));
        assert!(err(serde_json::json!({"name": "x", "condition": "temprature > 8"})).contains("no field `temprature`"));
        assert!(err(serde_json::json!({"name": "x", "condition": "temperature >> 8 +"})).starts_with("condition:"));
        assert!(err(serde_json::json!({"name": "x", "condition": "temperature > 8", "for": "5 minutes"})).starts_with("for:"));
        assert!(err(serde_json::json!({"name": "x", "absence": "15m", "clear": "a"})).contains("absence"));
        let e = err(serde_json::json!({"name": "x", "condition": "temperature > 8",
            "actions": [{"type": "mqtt", "topic": "a/#"}]}));
        assert!(e.starts_with("actions[0] (mqtt): topic"), "{e}");
        let e = err(serde_json::json!({"name": "x", "condition": "temperature > 8",
            "actions": [{"type": "webhook", "url": "ftp://x"}]}));
        assert!(e.contains("http://"), "{e}");
        assert!(serde_json::from_value::<RuleSpec>(serde_json::json!({"name": "x", "conditon": "a"})).is_err());
    }

    #[test]
    fn templates_expand() {
        assert_eq!(expand("corral.{tenant}.{device}.{event}", "d1", "acme", "r", "raised"), "corral.acme.d1.raised");
    }
}
