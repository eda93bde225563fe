//! Retained messages: the last retained PUBLISH per topic, kept in a trie of topic levels so a
//! new subscription's filter finds its matches by walking, not by scanning every topic.

use std::collections::HashMap;
use std::sync::Arc;

use crate::message::Message;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

/// Every retained message by topic. Guarded by the broker's RwLock.
#[derive(Debug, Default)]
pub(crate) struct RetainedStore {
    root: Node,
    len: usize,
}

impl RetainedStore {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Stores `message` as the retained one for its topic.
    pub fn set(&mut self, message: Arc<Message>) {
        let mut node = &mut self.root;
        for level in message.topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        if node.message.replace(message).is_none() {
            self.len += 1;
        }
    }

    /// Forgets the retained message of `topic`; true if there was one.
    pub fn delete(&mut self, topic: &str) -> bool {
        let levels: Vec<&str> = topic.split('/').collect();
        let removed = delete_at(&mut self.root, &levels);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Retained messages whose topic matches `filter` (a plain, valid filter).
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut out = Vec::new();
        collect(&self.root, &levels, true, &mut out);
        out
    }

    /// Every retained message (for snapshots).
    pub fn all(&self) -> Vec<Arc<Message>> {
        let mut out = Vec::with_capacity(self.len);
        everything(&self.root, false, &mut out);
        out
    }
}

fn delete_at(node: &mut Node, levels: &[&str]) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return node.message.take().is_some();
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = delete_at(child, rest);
    if child.message.is_none() && child.children.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn collect(node: &Node, levels: &[&str], at_root: bool, out: &mut Vec<Arc<Message>>) {
    let Some((first, rest)) = levels.split_first() else {
        out.extend(node.message.iter().cloned());
        return;
    };
    match *first {
        "#" => everything(node, at_root, out),
        "+" => {
            for (name, child) in &node.children {
                if !(at_root && name.starts_with('$')) {
                    collect(child, rest, false, out);
                }
            }
        }
        literal => {
            if let Some(child) = node.children.get(literal) {
                collect(child, rest, false, out);
            }
        }
    }
}

/// The node's own message ("a/#" matches "a") and all below it; at the root, `$` topics are
/// left out as wildcards do not reach them.
fn everything(node: &Node, at_root: bool, out: &mut Vec<Arc<Message>>) {
    out.extend(node.message.iter().cloned());
    for (name, child) in &node.children {
        if !(at_root && name.starts_with('$')) {
            everything(child, false, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    fn msg(topic: &str) -> Arc<Message> {
        Arc::new(Message {
            id: 0,
            topic: Arc::from(topic),
            payload: bytes::Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: true,
            props: None,
            expires_at_ms: None,
            origin_client: None,
            origin_tenant: None,
        })
    }

    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut t: Vec<String> = store.matching(filter).iter().map(|m| m.topic.to_string()).collect();
        t.sort();
        t
    }

    #[test]
    fn set_match_delete() {
        let mut store = RetainedStore::default();
        for t in ["a", "a/b", "a/c", "a/b/c", "$SYS/up", "x/y"] {
            store.set(msg(t));
        }
        store.set(msg("a/b"));
        assert_eq!(store.len(), 6);
        assert_eq!(topics(&store, "a/#"), ["a", "a/b", "a/b/c", "a/c"]);
        assert_eq!(topics(&store, "a/+"), ["a/b", "a/c"]);
        assert_eq!(topics(&store, "#"), ["a", "a/b", "a/b/c", "a/c", "x/y"]);
        assert_eq!(topics(&store, "+/y"), ["x/y"]);
        assert_eq!(topics(&store, "$SYS/#"), ["$SYS/up"]);
        assert!(store.delete("a/b"));
        assert!(!store.delete("a/b"));
        assert_eq!(topics(&store, "a/#"), ["a", "a/b/c", "a/c"]);
        assert!(store.delete("a/b/c"));
        assert_eq!(store.len(), 4);
        assert_eq!(store.all().len(), 4);
    }
}
