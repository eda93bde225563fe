//! Alarms: one open alarm per (rule, device). Repeats update its count and last values; the
//! lifecycle is active → acknowledged → cleared, each step with who and when.
//!
//! [`Book`] holds the open alarms in memory (the engine touches them on every matching message)
//! and remembers which changed, so the rules task writes them in one transaction per cycle.

use crate::spec::{AlarmEvent, Severity};
use serde::{Serialize, Serializer};
use std::collections::{HashMap, HashSet};

/// Where an alarm is in its lifecycle: active → acknowledged → cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlarmStatus {
    Active,
    Acknowledged,
    Cleared,
}

impl AlarmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmStatus::Active => "active",
            AlarmStatus::Acknowledged => "acknowledged",
            AlarmStatus::Cleared => "cleared",
        }
    }
    pub fn parse(s: &str) -> Option<AlarmStatus> {
        Some(match s {
            "active" => AlarmStatus::Active,
            "acknowledged" => AlarmStatus::Acknowledged,
            "cleared" => AlarmStatus::Cleared,
            _ => return None,
        })
    }
}

/// One alarm, as stored and as the API shows it. Times are Unix nanoseconds, shown as RFC 3339.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Alarm {
    pub id: i64,
    /// The rule that raised it; 0 for alarms the platform raises about itself.
    pub rule_id: i64,
    /// The rule's name (or the platform alarm's title).
    pub rule: String,
    pub tenant: String,
    /// The device it is about (for a platform alarm, what it is about).
    pub device: String,
    pub severity: Severity,
    pub status: AlarmStatus,
    pub message: String,
    /// Messages that matched while the alarm was open (the first included).
    pub count: i64,
    /// When it was raised.
    #[serde(serialize_with = "rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub first_at: i64,
    /// The last matching message.
    #[serde(serialize_with = "rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub last_at: i64,
    /// The fields of the last matching message.
    pub last_values: serde_json::Value,
    pub acknowledged_by: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schemars(with = "corral_model::schema::Rfc3339OrNull")]
    pub acknowledged_at: Option<i64>,
    /// Who cleared it: a person or token, or `rule` when its clear condition came true.
    pub cleared_by: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schemars(with = "corral_model::schema::Rfc3339OrNull")]
    pub cleared_at: Option<i64>,
}

pub fn format_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn rfc3339<S: Serializer>(ns: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ns(*ns))
}

fn rfc3339_opt<S: Serializer>(ns: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ns {
        Some(ns) => s.serialize_str(&format_ns(*ns)),
        None => s.serialize_none(),
    }
}

/// Who cleared an alarm whose clear condition came true.
pub const CLEARED_BY_RULE: &str = "rule";

/// What the engine saw for one (rule, device).
#[derive(Debug, Clone)]
pub enum Transition {
    /// The condition came true (and held for the rule's `for`), or the device went silent.
    Raise {
        rule_id: i64,
        rule: String,
        severity: Severity,
        message: String,
        tenant: String,
        device: String,
        at_ns: i64,
        values: serde_json::Value,
    },
    /// The condition is still true: count it on the open alarm.
    Repeat { rule_id: i64, device: String, at_ns: i64, values: serde_json::Value },
    /// The clear condition came true, or data arrived after an absence.
    Clear { rule_id: i64, device: String, at_ns: i64 },
}

/// The open alarms, keyed by (rule, device), and what changed since the last write.
#[derive(Debug, Default)]
pub struct Book {
    open: HashMap<(i64, String), Alarm>,
    changed: HashSet<(i64, String)>,
    /// Alarms that left `open` (cleared) and still have to be written.
    closed: Vec<Alarm>,
    next_id: i64,
}

impl Book {
    pub fn new(open: Vec<Alarm>, max_id: i64) -> Book {
        let open = open.into_iter().map(|a| ((a.rule_id, a.device.clone()), a)).collect();
        Book { open, changed: HashSet::new(), closed: Vec::new(), next_id: max_id + 1 }
    }

    pub fn open_alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.open.values()
    }

    /// Applies one transition; returns the alarm when its lifecycle changed (raised or cleared),
    /// which is when actions run and subscribers hear of it.
    pub fn apply(&mut self, t: Transition) -> Option<(AlarmEvent, Alarm)> {
        match t {
            Transition::Raise { rule_id, rule, severity, message, tenant, device, at_ns, values } => {
                let key = (rule_id, device);
                if let Some(alarm) = self.open.get_mut(&key) {
                    // Already open (raised before a restart, say): a repeat, not a new alarm.
                    alarm.count += 1;
                    alarm.last_at = at_ns;
                    alarm.last_values = values;
                    self.changed.insert(key);
                    return None;
                }
                let alarm = Alarm {
                    id: self.next_id,
                    rule_id,
                    rule,
                    tenant,
                    device: key.1.clone(),
                    severity,
                    status: AlarmStatus::Active,
                    message,
                    count: 1,
                    first_at: at_ns,
                    last_at: at_ns,
                    last_values: values,
                    acknowledged_by: None,
                    acknowledged_at: None,
                    cleared_by: None,
                    cleared_at: None,
                };
                self.next_id += 1;
                self.open.insert(key.clone(), alarm.clone());
                self.changed.insert(key);
                Some((AlarmEvent::Raised, alarm))
            }
            Transition::Repeat { rule_id, device, at_ns, values } => {
                let key = (rule_id, device);
                let alarm = self.open.get_mut(&key)?;
                alarm.count += 1;
                alarm.last_at = at_ns.max(alarm.last_at);
                alarm.last_values = values;
                self.changed.insert(key);
                None
            }
            Transition::Clear { rule_id, device, at_ns } => {
                let alarm = self.close(&(rule_id, device), CLEARED_BY_RULE, at_ns)?;
                Some((AlarmEvent::Cleared, alarm))
            }
        }
    }

    fn close(&mut self, key: &(i64, String), by: &str, at_ns: i64) -> Option<Alarm> {
        let mut alarm = self.open.remove(key)?;
        self.changed.remove(key);
        alarm.status = AlarmStatus::Cleared;
        alarm.cleared_by = Some(by.to_string());
        alarm.cleared_at = Some(at_ns);
        self.closed.push(alarm.clone());
        Some(alarm)
    }

    fn key_of(&self, id: i64) -> Option<(i64, String)> {
        self.open.iter().find(|(_, a)| a.id == id).map(|(k, _)| k.clone())
    }

    /// An operator acknowledges an open alarm. `None`: not open (the caller then looks in the
    /// database for a cleared one).
    pub fn acknowledge(&mut self, id: i64, by: &str, at_ns: i64) -> Option<Alarm> {
        let key = self.key_of(id)?;
        let alarm = self.open.get_mut(&key).expect("key from open");
        if alarm.acknowledged_at.is_none() {
            alarm.status = AlarmStatus::Acknowledged;
            alarm.acknowledged_by = Some(by.to_string());
            alarm.acknowledged_at = Some(at_ns);
            self.changed.insert(key);
        }
        Some(alarm.clone())
    }

    /// An operator clears an open alarm.
    pub fn clear(&mut self, id: i64, by: &str, at_ns: i64) -> Option<Alarm> {
        let key = self.key_of(id)?;
        self.close(&key, by, at_ns)
    }

    pub fn get(&self, id: i64) -> Option<&Alarm> {
        self.open.values().find(|a| a.id == id)
    }

    /// Everything to write since the last call: changed open alarms and newly cleared ones.
    pub fn take_changes(&mut self) -> Vec<Alarm> {
        let mut out: Vec<Alarm> = self.changed.drain().filter_map(|k| self.open.get(&k).cloned()).collect();
        out.append(&mut self.closed);
        out
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raise(device: &str, at: i64) -> Transition {
        Transition::Raise {
            rule_id: 1,
            rule: "warm".into(),
            severity: Severity::Major,
            message: "too warm".into(),
            tenant: "default".into(),
            device: device.into(),
            at_ns: at,
            values: serde_json::json!({"t": at}),
        }
    }

    #[test]
    fn one_open_alarm_per_rule_and_device() {
        let mut book = Book::new(vec![], 0);
        let (event, first) = book.apply(raise("d1", 1)).unwrap();
        assert_eq!((event, first.id, first.count), (AlarmEvent::Raised, 1, 1));
        assert!(book.apply(raise("d1", 2)).is_none(), "a second raise is a repeat");
        assert!(
            book.apply(Transition::Repeat { rule_id: 1, device: "d1".into(), at_ns: 3, values: serde_json::json!({}) }).is_none()
        );
        assert_eq!(book.get(1).unwrap().count, 3);
        assert_eq!(book.apply(raise("d2", 4)).unwrap().1.id, 2);
        let changes = book.take_changes();
        assert_eq!(changes.len(), 2);
        assert!(book.take_changes().is_empty());
    }

    #[test]
    fn lifecycle_records_who_and_when() {
        let mut book = Book::new(vec![], 10);
        let id = book.apply(raise("d1", 1)).unwrap().1.id;
        assert_eq!(id, 11);
        let acked = book.acknowledge(id, "alice", 5).unwrap();
        assert_eq!((acked.status, acked.acknowledged_by.as_deref()), (AlarmStatus::Acknowledged, Some("alice")));
        let (event, cleared) = book.apply(Transition::Clear { rule_id: 1, device: "d1".into(), at_ns: 9 }).unwrap();
        assert_eq!(event, AlarmEvent::Cleared);
        assert_eq!(
            (cleared.status, cleared.cleared_by.as_deref(), cleared.cleared_at),
            (AlarmStatus::Cleared, Some("rule"), Some(9))
        );
        assert_eq!(cleared.acknowledged_by.as_deref(), Some("alice"), "acknowledgement is kept");
        assert_eq!(book.open_count(), 0);
        assert!(
            book.apply(Transition::Repeat { rule_id: 1, device: "d1".into(), at_ns: 10, values: serde_json::json!({}) })
                .is_none()
        );
        let changes = book.take_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].status, AlarmStatus::Cleared);
    }
}
