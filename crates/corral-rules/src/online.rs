//! Online or offline, one answer for every device, from connections and absence rules.
//!
//! A device is **online** while it holds an MQTT connection, or when it was heard from (a message
//! on any protocol, a connect) after its last MQTT disconnect and within its *offline window*:
//! the shortest enabled absence rule that covers it (`no data for 15m`), else
//! `rules.offline_after_ms`. So an absence rule decides both its alarm and the device's status, a
//! device that reports over HTTP or CoAP is online while it keeps reporting, and an MQTT device is
//! offline the moment its connection ends (cleanly or by keep-alive timeout).

use crate::spec::RuleSpec;
use crate::{DeviceFacts, Rules};
use async_trait::async_trait;
use corral_services::{Connection, Connections, OnlineStatus};
use std::sync::Arc;

/// The offline windows in force: a snapshot of the enabled absence rules.
#[derive(Debug, Clone)]
pub struct OfflineWindows {
    absence: Vec<(RuleSpec, i64)>,
    default_ns: i64,
}

/// The platform's [`OnlineStatus`]: the connections the doors hold, judged with the offline
/// windows of the rules in force.
#[derive(Clone)]
pub struct Online {
    pub rules: Rules,
    pub connections: Arc<dyn Connections>,
}

#[async_trait]
impl OnlineStatus for Online {
    async fn online(&self, devices: &[DeviceFacts]) -> Vec<bool> {
        let windows = self.rules.offline_windows().await;
        let now = self.rules.inner.clock.now_ns();
        devices.iter().map(|d| windows.online(d, self.connections.connection(&d.id), now)).collect()
    }
}

impl OfflineWindows {
    pub(crate) fn new(absence: Vec<(RuleSpec, i64)>, default_ns: i64) -> Self {
        OfflineWindows { absence, default_ns }
    }

    /// How long after it was last heard from the device counts as offline.
    pub fn window_ns(&self, facts: &DeviceFacts) -> i64 {
        self.absence.iter().filter(|(spec, _)| spec.covers(facts)).map(|(_, ns)| *ns).min().unwrap_or(self.default_ns)
    }

    /// Whether the device is online at `now_ns` (its `last_seen_ns` is when it was last heard from).
    pub fn online(&self, facts: &DeviceFacts, connection: Connection, now_ns: i64) -> bool {
        connection.connected
            || facts
                .last_seen_ns
                .is_some_and(|seen| now_ns - seen < self.window_ns(facts) && connection.ended_ns.is_none_or(|ended| seen > ended))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    fn device(profile: &str, seen: Option<i64>) -> DeviceFacts {
        DeviceFacts {
            id: "d".into(),
            tenant: "default".into(),
            profile: Some(profile.into()),
            last_seen_ns: seen,
            ..Default::default()
        }
    }

    fn windows() -> OfflineWindows {
        let spec = |json| serde_json::from_value::<RuleSpec>(json).unwrap();
        OfflineWindows::new(
            vec![
                (spec(serde_json::json!({"name": "reefer offline", "absence": "15m", "scope": {"profile": "reefer"}})), 15 * MIN),
                (spec(serde_json::json!({"name": "reefer quiet", "absence": "5m", "scope": {"profile": "reefer"}})), 5 * MIN),
            ],
            10 * MIN,
        )
    }

    #[test]
    fn the_shortest_absence_rule_in_scope_sets_the_window() {
        let w = windows();
        assert_eq!(w.window_ns(&device("reefer", None)), 5 * MIN);
        assert_eq!(w.window_ns(&device("truck", None)), 10 * MIN, "no rule covers trucks: the default");
        assert!(w.online(&device("reefer", Some(0)), Connection::default(), 5 * MIN - 1));
        assert!(!w.online(&device("reefer", Some(0)), Connection::default(), 5 * MIN));
        assert!(w.online(&device("truck", Some(0)), Connection::default(), 9 * MIN));
        assert!(!w.online(&device("truck", None), Connection::default(), 0), "never heard from");
    }

    #[test]
    fn a_connection_is_online_and_its_end_is_offline_until_heard_again() {
        let w = windows();
        let silent_for_an_hour = device("reefer", Some(0));
        assert!(w.online(&silent_for_an_hour, Connection { connected: true, ended_ns: None }, 60 * MIN));
        let just_left = Connection { connected: false, ended_ns: Some(MIN) };
        assert!(!w.online(&device("truck", Some(MIN)), just_left, MIN + 1), "heard last at the disconnect");
        assert!(w.online(&device("truck", Some(2 * MIN)), just_left, 3 * MIN), "data over HTTP after it");
    }
}
