//! Brute-force throttling of sign-in: attempts are counted per user name and per client address
//! (an IPv6 client by its /64) over a window, *before* the password is checked, so parallel
//! guesses cannot slip past the limit; a successful sign-in takes its attempt back. Past the
//! limit, attempts are refused without checking the password until the window has passed.
//! Memory is bounded.

use corral_services::{Clock, SystemClock};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Attempts per key: when its window started (the clock's Unix ns) and how many.
pub struct Throttle {
    clock: Arc<dyn Clock>,
    failures: Mutex<HashMap<Key, (i64, u32)>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(Arc::new(SystemClock))
    }
}

/// Time from `since` to `now` (zero if the clock was set back meanwhile).
fn elapsed(since: i64, now: i64) -> Duration {
    Duration::from_nanos(u64::try_from(now.saturating_sub(since)).unwrap_or(0))
}

/// The key of an address: IPv6 clients get a /64 each, so one cannot rotate through its own.
fn address_key(address: IpAddr) -> Key {
    match address {
        IpAddr::V6(v6) => Key::Address(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
        v4 => Key::Address(v4),
    }
}

fn keys(name: &str, address: Option<IpAddr>) -> Vec<(Key, u32)> {
    let mut keys = vec![(Key::Name(name.to_ascii_lowercase()), PER_NAME)];
    keys.extend(address.map(|a| (address_key(a), PER_ADDRESS)));
    keys
}

impl Throttle {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Throttle { clock, failures: Mutex::default() }
    }

    /// Counts an attempt, or says how long the caller must wait when it is locked out (then
    /// nothing is counted and the password must not be checked).
    pub fn attempt(&self, name: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        let now = self.clock.now_ns();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let keys = keys(name, address);
        let wait = keys
            .iter()
            .filter_map(|(key, limit)| {
                failures
                    .get(key)
                    .filter(|(since, n)| *n >= *limit && elapsed(*since, now) < WINDOW)
                    .map(|(since, _)| WINDOW - elapsed(*since, now))
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if failures.len() >= MAX_KEYS {
            failures.retain(|_, (since, _)| elapsed(*since, now) < WINDOW);
            if failures.len() >= MAX_KEYS
                && let Some(stalest) = failures.iter().min_by_key(|(_, (since, _))| *since).map(|(k, _)| k.clone())
            {
                failures.remove(&stalest);
            }
        }
        for (key, _) in keys {
            let entry = failures.entry(key).or_insert((now, 0));
            if elapsed(entry.0, now) >= WINDOW {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
        Ok(())
    }

    /// A successful sign-in clears its name's count and takes back its own attempt from the
    /// address (not more: one right password must not reset a guesser's budget for other names).
    pub fn succeeded(&self, name: &str, address: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&Key::Name(name.to_ascii_lowercase()));
        if let Some(entry) = address.and_then(|a| failures.get_mut(&address_key(a))) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_a_name_after_five_attempts_and_an_address_after_twenty() {
        let t = Throttle::default();
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..PER_NAME {
            assert_eq!(t.attempt("Alice", Some(here)), Ok(()));
        }
        assert!(t.attempt("alice", None).is_err_and(|wait| wait <= WINDOW), "counted before any password is checked");
        for i in 0..PER_ADDRESS - PER_NAME {
            assert_eq!(t.attempt(&format!("user{i}"), Some(here)), Ok(()), "other names are still open from here");
        }
        assert!(t.attempt("carol", Some(here)).is_err(), "the address is locked for every name");
        assert_eq!(t.attempt("carol", Some("192.0.2.2".parse().unwrap())), Ok(()));
        t.succeeded("alice", Some(here));
        assert_eq!(t.attempt("alice", None), Ok(()), "a success clears its name");
    }

    #[test]
    fn a_success_takes_back_only_its_own_attempt_and_ipv6_counts_by_64() {
        let t = Throttle::default();
        let office: IpAddr = "192.0.2.9".parse().unwrap();
        for i in 0..PER_ADDRESS * 2 {
            t.attempt(&format!("person{}", i % 7), Some(office)).unwrap();
            t.succeeded(&format!("person{}", i % 7), Some(office));
        }
        assert_eq!(t.attempt("person1", Some(office)), Ok(()), "people signing in from one office are not locked out");
        for i in 0..PER_ADDRESS {
            t.attempt(&format!("guess{i}"), Some(format!("2001:db8::{i:x}").parse().unwrap())).unwrap();
        }
        assert!(t.attempt("guess", Some("2001:db8::ffff".parse().unwrap())).is_err(), "one /64 is one address");
    }

    #[test]
    fn a_locked_name_is_free_again_once_its_window_has_passed() {
        let clock = corral_services::ManualClock::at(1_000_000_000_000);
        let throttle = Throttle::new(Arc::new(clock.clone()));
        for _ in 0..PER_NAME {
            throttle.attempt("alice", None).unwrap();
        }
        let wait = throttle.attempt("alice", None).unwrap_err();
        assert_eq!(wait, WINDOW, "locked for the whole window, counted from the first failure");
        clock.advance(WINDOW - Duration::from_secs(1));
        assert_eq!(throttle.attempt("alice", None).unwrap_err(), Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        assert!(throttle.attempt("alice", None).is_ok(), "a new window starts");
    }
}
