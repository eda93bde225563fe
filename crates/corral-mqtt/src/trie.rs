//! The subscription trie: topic filters stored level by level, so routing a PUBLISH walks only
//! the branches its topic can match (literal level, `+`, `#`) instead of testing every filter.
//! Shared subscriptions (`$share/<group>/<filter>`) hang off the inner filter's node as groups
//! whose members take turns.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::acl::Audience;
use crate::codec::SubscriptionOptions;
use crate::session::Session;
use crate::topic;

/// The routing copy of one subscription.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub session: Arc<Session>,
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
    /// Whose messages it receives (checked per message).
    pub audience: Audience,
}

#[derive(Debug, Default)]
struct SharedGroup {
    members: Vec<Subscriber>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Non-shared subscriptions ending here, by client id.
    subscribers: HashMap<Arc<str>, Subscriber>,
    shared: HashMap<Box<str>, SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.shared.is_empty()
    }
}

/// All subscriptions of all sessions. Read-locked by every publish, write-locked by
/// (un)subscribe and session end.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionTrie {
    root: Node,
    len: usize,
}

impl SubscriptionTrie {
    /// Number of subscriptions (shared members included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds or replaces the subscription of `sub.session` to `filter`; true if it replaced one.
    pub fn insert(&mut self, filter: &str, sub: Subscriber) -> bool {
        let (group, inner) = match topic::parse_shared(filter) {
            Some((g, f)) => (Some(g), f),
            None => (None, filter),
        };
        let mut node = &mut self.root;
        for level in inner.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let client_id = sub.session.client_id.clone();
        let replaced = match group {
            None => node.subscribers.insert(client_id, sub).is_some(),
            Some(g) => {
                let members = &mut node.shared.entry(g.into()).or_default().members;
                match members.iter_mut().find(|m| m.session.client_id == client_id) {
                    Some(existing) => {
                        *existing = sub;
                        true
                    }
                    None => {
                        members.push(sub);
                        false
                    }
                }
            }
        };
        if !replaced {
            self.len += 1;
        }
        replaced
    }

    /// Removes `client_id`'s subscription to `filter`; true if there was one.
    pub fn remove(&mut self, filter: &str, client_id: &str) -> bool {
        let (group, inner) = match topic::parse_shared(filter) {
            Some((g, f)) => (Some(g), f),
            None => (None, filter),
        };
        let levels: Vec<&str> = inner.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, group, client_id);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `deliver` for every subscription matching `topic`: each plain subscriber, and one
    /// member per shared group (round robin, preferring connected members) among those `accept`s.
    pub fn for_each_match(&self, topic_name: &str, accept: &dyn Fn(&Subscriber) -> bool, deliver: &mut dyn FnMut(&Subscriber)) {
        let levels: Vec<&str> = topic_name.split('/').collect();
        let dollar = topic_name.starts_with('$');
        walk(&self.root, &levels, dollar, &mut |node| visit(node, accept, deliver));
    }

    /// Every session with a subscription matching `topic_name`, once each: plain subscribers and
    /// every member of a shared group (a question about who may hold a message, so no member
    /// takes its turn).
    pub fn sessions_matching(&self, topic_name: &str) -> Vec<Arc<Session>> {
        let levels: Vec<&str> = topic_name.split('/').collect();
        let mut sessions: Vec<Arc<Session>> = Vec::new();
        walk(&self.root, &levels, topic_name.starts_with('$'), &mut |node| {
            let shared = node.shared.values().flat_map(|g| g.members.iter());
            for sub in node.subscribers.values().chain(shared) {
                if !sessions.iter().any(|s| Arc::ptr_eq(s, &sub.session)) {
                    sessions.push(sub.session.clone());
                }
            }
        });
        sessions
    }
}

fn remove_at(node: &mut Node, levels: &[&str], group: Option<&str>, client_id: &str) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match group {
            None => node.subscribers.remove(client_id).is_some(),
            Some(g) => {
                let Some(shared) = node.shared.get_mut(g) else {
                    return false;
                };
                let before = shared.members.len();
                shared.members.retain(|m| &*m.session.client_id != client_id);
                let removed = shared.members.len() != before;
                if shared.members.is_empty() {
                    node.shared.remove(g);
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_at(child, rest, group, client_id);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

/// Calls `at` for every node whose subscriptions match the topic of `levels`.
fn walk(node: &Node, levels: &[&str], dollar_at_root: bool, at: &mut dyn FnMut(&Node)) {
    let Some((first, rest)) = levels.split_first() else {
        at(node);
        // "a/#" also matches "a" itself.
        if let Some(hash) = node.children.get("#") {
            at(hash);
        }
        return;
    };
    // Wildcards at the first level never match `$` topics (§4.7.2).
    if !dollar_at_root {
        if let Some(hash) = node.children.get("#") {
            at(hash);
        }
        if let Some(plus) = node.children.get("+") {
            walk(plus, rest, false, at);
        }
    }
    if let Some(child) = node.children.get(*first) {
        walk(child, rest, false, at);
    }
}

fn visit(node: &Node, accept: &dyn Fn(&Subscriber) -> bool, deliver: &mut dyn FnMut(&Subscriber)) {
    for sub in node.subscribers.values() {
        if accept(sub) {
            deliver(sub);
        }
    }
    for group in node.shared.values() {
        if let Some(member) = pick(group, accept) {
            deliver(member);
        }
    }
}

/// Next member in turn that accepts the message, preferring connected ones.
fn pick<'a>(group: &'a SharedGroup, accept: &dyn Fn(&Subscriber) -> bool) -> Option<&'a Subscriber> {
    let n = group.members.len();
    if n == 0 {
        return None;
    }
    let start = group.next.fetch_add(1, Ordering::Relaxed) % n;
    let in_turn = (0..n).map(|i| &group.members[(start + i) % n]);
    let mut fallback = None;
    for member in in_turn {
        if !accept(member) {
            continue;
        }
        if member.session.is_online() {
            return Some(member);
        }
        fallback.get_or_insert(member);
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ProtocolVersion, QoS};

    fn sub(client: &str, online: bool) -> Subscriber {
        let session = Arc::new(Session::new(Arc::from(client), Arc::from("anonymous"), ProtocolVersion::V5, 0));
        session.online.store(online, Ordering::Release);
        Subscriber {
            session,
            options: SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() },
            id: None,
            audience: Audience::Everything,
        }
    }

    fn matching(trie: &SubscriptionTrie, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        trie.for_each_match(topic, &|_| true, &mut |s| out.push(s.session.client_id.to_string()));
        out.sort();
        out
    }

    #[test]
    fn wildcards_and_literals() {
        let mut trie = SubscriptionTrie::default();
        trie.insert("a/b", sub("lit", true));
        trie.insert("a/+", sub("plus", true));
        trie.insert("a/#", sub("hash", true));
        trie.insert("#", sub("all", true));
        trie.insert("+/+/c", sub("deep", true));
        assert_eq!(matching(&trie, "a/b"), ["all", "hash", "lit", "plus"]);
        assert_eq!(matching(&trie, "a"), ["all", "hash"]);
        assert_eq!(matching(&trie, "a/b/c"), ["all", "deep", "hash"]);
        assert_eq!(matching(&trie, "x"), ["all"]);
        assert_eq!(trie.len(), 5);
    }

    #[test]
    fn dollar_topics_skip_root_wildcards() {
        let mut trie = SubscriptionTrie::default();
        trie.insert("#", sub("all", true));
        trie.insert("+/x", sub("plus", true));
        trie.insert("$SYS/#", sub("sys", true));
        assert_eq!(matching(&trie, "$SYS/x"), ["sys"]);
    }

    #[test]
    fn remove_prunes_and_reports() {
        let mut trie = SubscriptionTrie::default();
        trie.insert("a/b/c", sub("x", true));
        assert!(trie.insert("a/b/c", sub("x", true)));
        assert_eq!(trie.len(), 1);
        assert!(!trie.remove("a/b", "x"));
        assert!(trie.remove("a/b/c", "x"));
        assert!(!trie.remove("a/b/c", "x"));
        assert!(trie.root.is_empty());
        assert_eq!(trie.len(), 0);
    }

    #[test]
    fn shared_groups_round_robin_and_prefer_online() {
        let mut trie = SubscriptionTrie::default();
        trie.insert("$share/g/t/+", sub("m1", true));
        trie.insert("$share/g/t/+", sub("m2", true));
        trie.insert("$share/g/t/+", sub("m3", false));
        trie.insert("$share/h/t/#", sub("solo", true));
        let mut counts = HashMap::new();
        for _ in 0..30 {
            for c in matching(&trie, "t/x") {
                *counts.entry(c).or_insert(0) += 1;
            }
        }
        assert_eq!(counts["solo"], 30);
        assert_eq!(counts.get("m3"), None, "offline member skipped while others are online");
        assert_eq!(counts["m1"] + counts["m2"], 30);
        assert!(counts["m1"] >= 10 && counts["m2"] >= 10, "{counts:?}");
        assert!(trie.remove("$share/g/t/+", "m1"));
        assert!(trie.remove("$share/g/t/+", "m2"));
        assert_eq!(matching(&trie, "t/x"), ["m3", "solo"], "offline member used as fallback");
    }

    #[test]
    fn sessions_matching_names_every_session_once_and_takes_no_turn() {
        let mut trie = SubscriptionTrie::default();
        let both = sub("both", true);
        trie.insert("d/x/c/+", both.clone());
        trie.insert("d/x/#", both);
        trie.insert("$share/g/d/+/c/+", sub("m1", true));
        trie.insert("$share/g/d/+/c/+", sub("m2", false));
        trie.insert("d/y/c/+", sub("other", true));
        let mut names: Vec<String> = trie.sessions_matching("d/x/c/1").iter().map(|s| s.client_id.to_string()).collect();
        names.sort();
        assert_eq!(names, ["both", "m1", "m2"]);
        let node = ["d", "+", "c", "+"].iter().fold(&trie.root, |node, level| &node.children[*level]);
        assert_eq!(node.shared["g"].next.load(Ordering::Relaxed), 0, "no member took its turn");
    }
}
