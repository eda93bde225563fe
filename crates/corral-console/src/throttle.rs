//! Brute-force throttling of sign-in: failed attempts are counted per user name and per client
//! address over a window; past the limit, attempts are refused without checking the password
//! until the window has passed. Memory is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per user name, and per address (many names from one place), per window.
const PER_NAME: u32 = 5;
const PER_ADDRESS: u32 = 20;
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys tracked at most; beyond it the stalest are forgotten.
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Name(String),
    Address(IpAddr),
}

#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<Key, (Instant, u32)>>,
}

impl Throttle {
    /// How long the caller must wait before trying again, if it is locked out.
    pub fn locked_out(&self, name: &str, address: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = vec![(Key::Name(name.to_ascii_lowercase()), PER_NAME)];
        keys.extend(address.map(|a| (Key::Address(a), PER_ADDRESS)));
        keys.into_iter()
            .filter_map(|(key, limit)| failures.get(&key).filter(|(since, n)| *n >= limit && now.duration_since(*since) < WINDOW).map(|(since, _)| WINDOW - now.duration_since(*since)))
            .max()
    }

    pub fn failed(&self, name: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_KEYS {
            failures.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
            if failures.len() >= MAX_KEYS
                && let Some(stalest) = failures.iter().min_by_key(|(_, (since, _))| *since).map(|(k, _)| k.clone())
            {
                failures.remove(&stalest);
            }
        }
        let mut keys = vec![Key::Name(name.to_ascii_lowercase())];
        keys.extend(address.map(Key::Address));
        for key in keys {
            let entry = failures.entry(key).or_insert((now, 0));
            if now.duration_since(entry.0) >= WINDOW {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
    }

    /// A successful sign-in clears its name's count (not its address's: one right password must
    /// not reset a guesser's budget for other names).
    pub fn succeeded(&self, name: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&Key::Name(name.to_ascii_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_a_name_after_five_failures_and_an_address_after_twenty() {
        let t = Throttle::default();
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..PER_NAME {
            assert_eq!(t.locked_out("alice", Some(here)), None);
            t.failed("Alice", Some(here));
        }
        assert!(t.locked_out("alice", None).is_some_and(|wait| wait <= WINDOW));
        assert_eq!(t.locked_out("bob", Some(here)), None, "other names are still open from here");
        for i in 0..PER_ADDRESS {
            t.failed(&format!("user{i}"), Some(here));
        }
        assert!(t.locked_out("carol", Some(here)).is_some(), "the address is locked for every name");
        assert_eq!(t.locked_out("carol", Some("192.0.2.2".parse().unwrap())), None);
        t.succeeded("alice");
        assert_eq!(t.locked_out("alice", None), None);
    }
}
