//! Who observes one kind of resource (RFC 7641): at most one observation per device, bounded
//! server-wide, shared fairly between tenants. The commands ([`crate::commands`]) and the
//! desired twin documents ([`crate::twins`]) each keep one table.
//!
//! A device has at most one observation, its newest: a device that wakes behind a new NAT port
//! registers again and the stale one is dropped. When `max` observations are held, a new one
//! takes the place of the oldest observation of the tenant holding the most (unless that is its
//! own tenant), so one tenant's devices cannot keep every other tenant's from observing.
//! Observations live in memory: a restart forgets them, and devices register again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where a device's observation lives: its endpoint and the token it registered with, and what
/// the resource keeps beside (`S`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observer<S = ()> {
    pub peer: SocketAddr,
    pub token: Vec<u8>,
    /// The device's tenant, for the per-tenant share of observations.
    pub tenant: Arc<str>,
    /// Tells this registration from a later one of the same device.
    pub generation: u64,
    /// The next Observe sequence number (RFC 7641 §4.4: 24 bits, increasing), for a resource
    /// that numbers its notifications by count.
    pub sequence: u32,
    /// The resource's own state of this observation (dropped with it).
    pub state: S,
}

/// One resource's observations by device. Its lock is never held while calling out, so an
/// owner may call it while holding its own lock.
pub struct Observers<S = ()> {
    table: Mutex<HashMap<String, Observer<S>>>,
    max: usize,
    next_generation: AtomicU64,
    /// What is observed, for the log: `commands`, `desired documents`.
    what: &'static str,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S> Observers<S> {
    pub fn new(max: usize, what: &'static str) -> Observers<S> {
        Observers { table: Mutex::default(), max, next_generation: 1.into(), what }
    }

    /// Observations held now.
    pub fn len(&self) -> usize {
        lock(&self.table).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, device: &str) -> bool {
        lock(&self.table).contains_key(device)
    }

    /// Registers `peer`/`token` as the device's observation, replacing an older one, with
    /// `state` and Observe numbers from `sequence`. Returns its generation, or `None` (not
    /// registered) when `max` devices observe already and no other tenant holds more than the
    /// device's own.
    pub fn register(&self, device: &str, tenant: &str, peer: SocketAddr, token: Vec<u8>, sequence: u32, state: S) -> Option<u64> {
        let mut table = lock(&self.table);
        if !table.contains_key(device) && table.len() >= self.max && !self.make_fair_room(&mut table, tenant) {
            return None;
        }
        let generation = self.next_generation.fetch_add(1, Relaxed);
        table.insert(device.to_string(), Observer { peer, token, tenant: Arc::from(tenant), generation, sequence, state });
        Some(generation)
    }

    /// Ends the oldest observation of the tenant holding the most, if it holds more than
    /// `tenant` (one more than `tenant` would only swap places). False if none may go.
    fn make_fair_room(&self, table: &mut HashMap<String, Observer<S>>, tenant: &str) -> bool {
        let mut held: HashMap<&str, usize> = HashMap::new();
        for o in table.values() {
            *held.entry(o.tenant.as_ref()).or_default() += 1;
        }
        let own = held.get(tenant).copied().unwrap_or(0);
        let Some((largest, count)) = held.into_iter().max_by_key(|(_, n)| *n) else {
            return false;
        };
        if count <= own + 1 {
            return false;
        }
        let largest: Arc<str> = Arc::from(largest);
        let oldest =
            table.iter().filter(|(_, o)| o.tenant == largest).min_by_key(|(_, o)| o.generation).map(|(device, _)| device.clone());
        if let Some(device) = oldest {
            table.remove(&device);
            tracing::info!(tenant = %largest, what = self.what, "coap: observation ended to make room for another tenant's");
        }
        true
    }

    /// Ends an observation: a GET with Observe = 1. Returns whether it was the device's.
    pub fn cancel(&self, device: &str, peer: SocketAddr, token: &[u8]) -> bool {
        let mut table = lock(&self.table);
        let matches = table.get(device).is_some_and(|o| o.peer == peer && o.token == token);
        if matches {
            table.remove(device);
        }
        matches
    }

    /// Ends the device's observation whatever it is (its credentials changed).
    pub fn forget(&self, device: &str) -> bool {
        lock(&self.table).remove(device).is_some()
    }

    /// Ends the observation `generation` if it is still the device's (it stopped answering).
    pub fn lost(&self, device: &str, generation: u64) -> bool {
        let mut table = lock(&self.table);
        let matches = table.get(device).is_some_and(|o| o.generation == generation);
        if matches {
            table.remove(device);
        }
        matches
    }

    /// Runs `f` on the device's observation, if it has one.
    pub fn with<R>(&self, device: &str, f: impl FnOnce(&mut Observer<S>) -> R) -> Option<R> {
        lock(&self.table).get_mut(device).map(f)
    }

    /// Runs `f` on every observation, with its device; returns what `f` gave back that was not
    /// `None`.
    pub fn each<R>(&self, mut f: impl FnMut(&str, &mut Observer<S>) -> Option<R>) -> Vec<R> {
        lock(&self.table).iter_mut().filter_map(|(device, o)| f(device, o)).collect()
    }
}

impl<S: Clone> Observers<S> {
    /// The device's observation with its sequence number taken (the next one is one more), for
    /// a notification.
    pub fn take_sequence(&self, device: &str) -> Option<Observer<S>> {
        self.with(device, |observer| {
            let taken = observer.clone();
            observer.sequence = (observer.sequence + 1) & 0xff_ffff;
            taken
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_newest_registration_wins_and_only_its_own_end_removes_it() {
        let o: Observers = Observers::new(10, "test");
        let first = o.register("a", "acme", peer(1), vec![1], 2, ()).unwrap();
        let second = o.register("a", "acme", peer(2), vec![2], 2, ()).unwrap();
        assert_eq!(o.len(), 1);
        assert!(!o.cancel("a", peer(1), &[1]), "the old token no longer names it");
        assert!(!o.lost("a", first), "an older generation's loss does not end the newer");
        assert_eq!(o.take_sequence("a").map(|x| (x.peer, x.sequence)), Some((peer(2), 2)));
        assert_eq!(o.take_sequence("a").map(|x| x.sequence), Some(3));
        assert!(o.lost("a", second));
        assert!(o.is_empty());
    }

    #[test]
    fn a_tenant_at_the_bound_gives_way_to_another_but_not_to_itself() {
        let o: Observers = Observers::new(2, "test");
        assert!(o.register("a1", "acme", peer(1), vec![1], 2, ()).is_some());
        assert!(o.register("a2", "acme", peer(2), vec![2], 2, ()).is_some());
        assert_eq!(o.register("a3", "acme", peer(3), vec![3], 2, ()), None);
        assert!(o.register("a2", "acme", peer(4), vec![4], 2, ()).is_some(), "re-registering needs no room");
        assert!(o.register("g1", "globex", peer(5), vec![5], 2, ()).is_some(), "globex takes acme's oldest");
        assert!(!o.contains("a1") && o.contains("a2"));
        assert_eq!(o.register("g2", "globex", peer(6), vec![6], 2, ()), None, "now even: nobody gives way");
    }
}
