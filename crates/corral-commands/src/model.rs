//! What a tracked command is, the states it moves through, and the two small JSON shapes a
//! device sees: the command it receives and the answer it sends back.

use corral_model::{DeviceId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// Where a command is in its life. The order is the order of the steps: a command only ever moves
/// forward, and the last four are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Waiting for its device: created, not yet carried to it (the device is offline, or asleep).
    Queued,
    /// A door carried it to the device (published to its connection, sent as a notification).
    Sent,
    /// The transport acknowledged it (MQTT PUBACK, CoAP ACK, an HTTP poll answered).
    Delivered,
    /// The device answered that it carried it out.
    Succeeded,
    /// The device answered that it tried and failed.
    Failed,
    /// The device answered that it would not (unknown command, bad payload, busy).
    Rejected,
    /// No answer before its timeout.
    Expired,
}

impl CommandState {
    pub const ALL: [CommandState; 7] = [
        CommandState::Queued,
        CommandState::Sent,
        CommandState::Delivered,
        CommandState::Succeeded,
        CommandState::Failed,
        CommandState::Rejected,
        CommandState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Sent => "sent",
            CommandState::Delivered => "delivered",
            CommandState::Succeeded => "succeeded",
            CommandState::Failed => "failed",
            CommandState::Rejected => "rejected",
            CommandState::Expired => "expired",
        }
    }

    /// Answered or expired: nothing changes it any more.
    pub fn is_final(self) -> bool {
        self >= CommandState::Succeeded
    }
}

impl fmt::Display for CommandState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CommandState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CommandState::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| {
            format!("unknown command state {s:?} (one of queued, sent, delivered, succeeded, failed, rejected, expired)")
        })
    }
}

/// One command and everything that happened to it. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TrackedCommand {
    /// `cmd_` and 20 hex digits.
    pub id: String,
    pub device: DeviceId,
    pub tenant: TenantId,
    /// What the device dispatches on.
    pub name: String,
    /// What the device receives with the name (any JSON).
    pub payload: Value,
    pub state: CommandState,
    pub created_at_ms: i64,
    /// When a door carried it to the device.
    pub sent_at_ms: Option<i64>,
    /// When the transport acknowledged it.
    pub delivered_at_ms: Option<i64>,
    /// When it became final (answered or expired).
    pub finished_at_ms: Option<i64>,
    /// It expires at this time unless answered before.
    pub expires_at_ms: i64,
    /// The door that last carried it (`mqtt`, `coap`, `http`).
    pub door: Option<String>,
    /// The payload of the device's answer.
    pub response: Option<Value>,
    /// Why it failed, was rejected or expired, when known.
    pub reason: Option<String>,
    /// The bulk job it belongs to (`job_` and 20 hex digits).
    pub job: Option<String>,
    /// Who created it (an API token's name, a console user, `rule:<id>`).
    pub created_by: String,
}

impl TrackedCommand {
    /// What the device receives: `{"id", "name", "payload"}` ([`DeviceCommand`]), the same on
    /// every door.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&DeviceCommand { id: &self.id, name: &self.name, payload: &self.payload }).unwrap_or_default()
    }
}

/// A command as its device receives it, on every door.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DeviceCommand<'a> {
    /// The command's id: the device answers to it.
    pub id: &'a str,
    /// What to do.
    pub name: &'a str,
    /// Its arguments (any JSON; null when none were given).
    pub payload: &'a Value,
}

/// A command to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCommand {
    pub device: DeviceId,
    pub tenant: TenantId,
    pub name: String,
    pub payload: Value,
    /// How long the device has to answer, from now.
    pub timeout_ms: i64,
    pub job: Option<String>,
    pub created_by: String,
    /// A retry key: creating again with the same key returns the first command.
    pub key: Option<String>,
}

/// The longest a command name may be: it is what the device dispatches on, not data.
pub const MAX_NAME_BYTES: usize = 128;

impl NewCommand {
    /// Refuses an empty, overlong or unprintable name (the id, not the name, is the topic level)
    /// and a timeout that is not positive.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > MAX_NAME_BYTES || self.name.chars().any(char::is_control) {
            return Err(format!("a command name is 1 to {MAX_NAME_BYTES} bytes of printable text"));
        }
        if self.timeout_ms <= 0 {
            return Err("a command's timeout must be positive".into());
        }
        Ok(())
    }
}

/// A device's answer to a command: `{"status": "succeeded" | "failed" | "rejected", "payload":
/// ..., "reason": "..."}`. Every field is optional: an empty answer, or one without a status, means
/// succeeded, so the simplest device acknowledges by answering anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub state: CommandState,
    pub payload: Option<Value>,
    pub reason: Option<String>,
}

/// The wire shape [`Answer::parse`] reads. `properties` constrain only objects, so any other JSON
/// value (taken as the payload of a success) matches too, as it should.
impl schemars::JsonSchema for Answer {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CommandAnswer".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A device's answer to a command. Every field is optional, and unknown fields are ignored: \
                an empty body, or an object without `status`, means succeeded. Any JSON that is not an object \
                (and any body that is not JSON, as text) is the payload of a success.",
            "properties": {
                "status": {
                    "description": "How it went: `succeeded` (also `success`, `ok`), `failed` (also `failure`, `error`) or `rejected` (the device would not: unknown command, bad payload, busy).",
                    "type": "string",
                    "enum": ["succeeded", "success", "ok", "failed", "failure", "error", "rejected"],
                },
                "payload": { "description": "The result, any JSON; kept as the command's `response`." },
                "reason": { "description": "Why it failed or was rejected; a value that is not a string is kept as its JSON text." },
            },
        })
    }
}

impl Answer {
    pub fn parse(body: &[u8]) -> Result<Answer, String> {
        let succeeded = |payload| Answer { state: CommandState::Succeeded, payload, reason: None };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(succeeded(None));
        }
        let value: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            // Not JSON: the answer is its text (a device that prints "ok").
            Err(_) => return Ok(succeeded(Some(Value::String(String::from_utf8_lossy(body).into_owned())))),
        };
        let Value::Object(mut fields) = value else { return Ok(succeeded(Some(value))) };
        let state = match fields.remove("status") {
            None => CommandState::Succeeded,
            Some(Value::String(status)) => match status.as_str() {
                "succeeded" | "success" | "ok" => CommandState::Succeeded,
                "failed" | "failure" | "error" => CommandState::Failed,
                "rejected" => CommandState::Rejected,
                other => return Err(format!("an answer's status is succeeded, failed or rejected, not {other:?}")),
            },
            Some(other) => return Err(format!("an answer's status is a string, not {other}")),
        };
        let reason = match fields.remove("reason") {
            Some(Value::String(reason)) => Some(reason),
            Some(other) => Some(other.to_string()),
            None => None,
        };
        Ok(Answer { state, payload: fields.remove("payload"), reason })
    }
}

/// A fresh command id: `cmd_` and 20 random hex digits, safe as an MQTT topic level and a URL
/// path segment.
pub(crate) fn new_id() -> String {
    random_id("cmd_")
}

/// A fresh bulk job id: `job_` and 20 random hex digits.
pub fn new_job_id() -> String {
    random_id("job_")
}

fn random_id(prefix: &str) -> String {
    let bytes: [u8; 10] = rand::random();
    let mut id = String::with_capacity(prefix.len() + 20);
    id.push_str(prefix);
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_move_forward_and_the_last_four_are_final() {
        assert!(CommandState::Queued < CommandState::Sent && CommandState::Sent < CommandState::Delivered);
        let finals: Vec<_> = CommandState::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [CommandState::Succeeded, CommandState::Failed, CommandState::Rejected, CommandState::Expired]);
        for state in CommandState::ALL {
            assert_eq!(state.as_str().parse::<CommandState>().unwrap(), state);
        }
        assert!("done".parse::<CommandState>().is_err());
    }

    #[test]
    fn answers_default_to_succeeded_and_carry_status_payload_and_reason() {
        let ok = Answer::parse(b"").unwrap();
        assert_eq!((ok.state, ok.payload), (CommandState::Succeeded, None));
        assert_eq!(Answer::parse(b"ok").unwrap().payload, Some(json!("ok")));
        assert_eq!(Answer::parse(b"[1]").unwrap().payload, Some(json!([1])));
        let failed = Answer::parse(br#"{"status": "failed", "reason": "door jammed", "payload": {"code": 7}}"#).unwrap();
        assert_eq!(
            failed,
            Answer { state: CommandState::Failed, payload: Some(json!({"code": 7})), reason: Some("door jammed".into()) }
        );
        assert_eq!(Answer::parse(br#"{"status": "rejected"}"#).unwrap().state, CommandState::Rejected);
        assert!(Answer::parse(br#"{"status": "maybe"}"#).is_err());
        assert!(Answer::parse(br#"{"status": 1}"#).is_err());
    }

    #[test]
    fn ids_are_distinct_and_topic_safe() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(a.starts_with("cmd_") && a.len() == 24 && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        let job = new_job_id();
        assert!(job.starts_with("job_") && job.len() == 24 && job != new_job_id());
    }

    #[test]
    fn names_and_timeouts_are_checked() {
        let new = |name: &str, timeout_ms| NewCommand {
            device: DeviceId::new("d").unwrap(),
            tenant: TenantId::default_tenant(),
            name: name.into(),
            payload: Value::Null,
            timeout_ms,
            job: None,
            created_by: "t".into(),
            key: None,
        };
        assert!(new("reboot", 1000).check().is_ok());
        assert!(new("", 1000).check().is_err());
        assert!(new(&"x".repeat(129), 1000).check().is_err());
        assert!(new("a\nb", 1000).check().is_err());
        assert!(new("reboot", 0).check().is_err());
    }
}
