//! Topic names and filters (MQTT §4.7): validation, wildcard matching, shared subscriptions and
//! the platform topics under `devices/<id>/` that the rest of Corral cares about.

/// A topic name a client may publish to: non-empty, no wildcard characters, fits a u16 length.
pub fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= u16::MAX as usize && !topic.contains(['+', '#'])
}

/// A topic filter: `+` fills a whole level, `#` a whole last level; `$share/<group>/<filter>`
/// needs a group without wildcards or `/` and a valid inner filter.
pub fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > u16::MAX as usize {
        return false;
    }
    if let Some(rest) = filter.strip_prefix("$share/") {
        return match rest.split_once('/') {
            Some((group, inner)) => !group.is_empty() && !group.contains(['+', '#']) && is_valid_plain_filter(inner),
            None => false,
        };
    }
    is_valid_plain_filter(filter)
}

fn is_valid_plain_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "+" => {}
            "#" => return levels.peek().is_none(),
            other if other.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Splits `$share/<group>/<filter>` into `(group, filter)`.
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

/// Does `filter` (not shared) match `topic`? Wildcards at the first level do not match topics
/// starting with `$` (§4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The topics devices publish to the platform itself (telemetry, attributes, reported twin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformTopic {
    /// `devices/<id>/telemetry` (table `None` = the default table) or `.../telemetry/<table>`.
    Telemetry { table: Option<String> },
    /// `devices/<id>/attributes`
    Attributes,
    /// `devices/<id>/twin/reported`
    TwinReported,
}

/// The device id of a `devices/<id>/...` topic (with at least one level after the id).
pub fn device_of(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix("devices/")?;
    let (id, tail) = rest.split_once('/')?;
    (!id.is_empty() && !tail.is_empty()).then_some(id)
}

/// `devices/<id>/commands/<command-id>/response`: a device's answer to a command, which only the
/// device (or its gateway) gives.
pub fn is_command_answer(topic: &str) -> bool {
    device_of(topic).is_some_and(|id| {
        let levels: Vec<&str> = topic["devices/".len() + id.len() + 1..].split('/').collect();
        matches!(levels.as_slice(), ["commands", command, "response"] if !command.is_empty())
    })
}

/// `devices/<id>/twin` (answers to `twin/get`) and `devices/<id>/twin/desired` (the desired
/// document): what the platform tells a device about its twin, so only the platform publishes
/// there.
pub fn is_twin_output(topic: &str) -> bool {
    device_of(topic).is_some_and(|id| matches!(&topic["devices/".len() + id.len() + 1..], "twin" | "twin/desired"))
}

/// Classifies `topic`: `Some((device, kind))` when the platform must see it before routing.
pub fn platform_topic(topic: &str) -> Option<(&str, PlatformTopic)> {
    let id = device_of(topic)?;
    let tail = &topic["devices/".len() + id.len() + 1..];
    let kind = match tail {
        "telemetry" => PlatformTopic::Telemetry { table: None },
        "attributes" => PlatformTopic::Attributes,
        "twin/reported" => PlatformTopic::TwinReported,
        _ => {
            let table = tail.strip_prefix("telemetry/")?;
            if table.is_empty() || table.contains('/') {
                return None;
            }
            PlatformTopic::Telemetry { table: Some(table.to_owned()) }
        }
    };
    Some((id, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(is_valid_topic_name("a/b"));
        assert!(is_valid_topic_name("/"));
        assert!(!is_valid_topic_name(""));
        assert!(!is_valid_topic_name("a/+"));
        assert!(!is_valid_topic_name("a/#"));
    }

    #[test]
    fn filters() {
        for ok in ["#", "+", "a/#", "a/+/b", "+/+", "/", "$share/g/a/#", "$SYS/#"] {
            assert!(is_valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "#/a", "$share/g", "$share//a", "$share/g+/a", "$share/g/"] {
            assert!(!is_valid_filter(bad), "{bad}");
        }
    }

    #[test]
    fn matching() {
        assert!(matches("a/b", "a/b"));
        assert!(matches("a/+", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("$SYS/+", "$SYS/x"));
    }

    #[test]
    fn shared_and_platform_topics() {
        assert_eq!(parse_shared("$share/g/a/+"), Some(("g", "a/+")));
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(platform_topic("devices/d1/telemetry"), Some(("d1", PlatformTopic::Telemetry { table: None })));
        assert_eq!(
            platform_topic("devices/d1/telemetry/power"),
            Some(("d1", PlatformTopic::Telemetry { table: Some("power".into()) }))
        );
        assert_eq!(platform_topic("devices/d1/attributes"), Some(("d1", PlatformTopic::Attributes)));
        assert_eq!(platform_topic("devices/d1/twin/reported"), Some(("d1", PlatformTopic::TwinReported)));
        assert_eq!(platform_topic("devices/d1/twin/desired"), None);
        assert!(is_twin_output("devices/d1/twin/desired") && is_twin_output("devices/d1/twin"));
        assert!(is_command_answer("devices/d1/commands/c1/response"));
        assert!(!is_command_answer("devices/d1/commands/c1") && !is_command_answer("devices/d1/commands//response"));
        for other in ["devices/d1/twin/reported", "devices/d1/twin/get", "devices/twin/desired", "twin/desired"] {
            assert!(!is_twin_output(other), "{other}");
        }
        assert_eq!(platform_topic("devices/d1/commands/reboot"), None);
        assert_eq!(platform_topic("devices/d1/telemetry/a/b"), None);
        assert_eq!(device_of("devices/d1"), None);
        assert_eq!(device_of("devices/d1/x"), Some("d1"));
    }
}
