//! Commands waiting for CoAP devices, and the devices observing `devices/<id>/commands`
//! (RFC 7641).
//!
//! A sleepy device cannot hold a connection, so the platform's commands wait here for it. Only
//! devices that used CoAP recently have a queue (commands for MQTT devices are not kept twice).
//! Commands go out one at a time as Confirmable notifications, in order; a command leaves the
//! queue when its notification is acknowledged, or when the device posts a response to it.
//! Queues live in memory: a restart forgets them.
//!
//! The observations are an [`Observers`] table: one per device, its newest, bounded server-wide
//! (`max_observers`) and shared fairly between tenants.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::observers::Observers;

/// A device's observation of its commands (Observe numbers count from 2: the registration's
/// answer carries 1).
pub type Observer = crate::observers::Observer;

/// One command as a device receives it: JSON `{"id": ..., "payload": ...}`, plus `"name"` for a
/// tracked command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: String,
    pub representation: Arc<[u8]>,
    /// Tracked (`corral-commands`): its delivery is reported back to the platform.
    pub tracked: bool,
    queued_at: Instant,
}

impl Command {
    /// A tracked command, whose body (`{"id", "name", "payload"}`) the platform wrote already.
    pub fn tracked(id: &str, body: &[u8]) -> Command {
        Command { id: id.to_string(), representation: body.into(), tracked: true, queued_at: Instant::now() }
    }

    /// The payload is embedded as JSON when it is JSON, else as a string (UTF-8, or base64 in
    /// `payload_base64` for binary payloads), so a device reads one shape whatever was sent.
    pub fn new(id: &str, payload: &[u8]) -> Command {
        let mut doc = serde_json::Map::new();
        doc.insert("id".into(), id.into());
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(payload) {
            doc.insert("payload".into(), json);
        } else if let Ok(text) = std::str::from_utf8(payload) {
            doc.insert("payload".into(), text.into());
        } else {
            use base64::Engine;
            doc.insert("payload_base64".into(), base64::engine::general_purpose::STANDARD.encode(payload).into());
        }
        let representation = serde_json::to_vec(&doc).unwrap_or_default().into();
        Command { id: id.to_string(), representation, tracked: false, queued_at: Instant::now() }
    }
}

#[derive(Debug)]
struct Device {
    pending: VecDeque<Command>,
    /// A delivery task is running for this device (at most one, to keep commands in order).
    delivering: bool,
    used: Instant,
}

/// The command queues of CoAP devices and their observations. `devices` is locked before
/// `observers` (never the other way), so a delivery sees a queue and an observation together.
pub struct Commands {
    devices: Mutex<HashMap<String, Device>>,
    observers: Observers,
    /// When quiet devices were last forgotten.
    swept: Mutex<Instant>,
    max_pending: usize,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

/// How often quiet devices are looked for: a walk over every device, so not on every request.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Commands {
    pub fn new(max_pending: usize, max_observers: usize, ttl: Duration, metrics: Arc<Metrics>) -> Commands {
        Commands {
            devices: Mutex::default(),
            observers: Observers::new(max_observers, "commands"),
            swept: Mutex::new(Instant::now()),
            max_pending,
            ttl,
            metrics,
        }
    }

    /// Devices observing their commands now.
    pub fn observing(&self) -> usize {
        self.observers.len()
    }

    fn device<'a>(&self, devices: &'a mut HashMap<String, Device>, id: &str) -> &'a mut Device {
        let device = devices.entry(id.to_string()).or_insert_with(|| Device {
            pending: VecDeque::new(),
            delivering: false,
            used: Instant::now(),
        });
        device.used = Instant::now();
        device
    }

    /// The device spoke CoAP: from now on commands for it are kept for it.
    pub fn used_by(&self, device: &str) {
        let mut devices = lock(&self.devices);
        self.device(&mut devices, device);
        self.sweep(&mut devices);
    }

    /// Queues a command if the device uses CoAP. Returns true if a delivery task should start.
    pub fn push(&self, device: &str, command: Command) -> bool {
        let mut devices = lock(&self.devices);
        let Some(d) = devices.get_mut(device) else {
            return false;
        };
        // Sent again by the platform (the device came back) while it still waits here: once.
        if d.pending.iter().any(|waiting| waiting.id == command.id) {
            return false;
        }
        d.pending.push_back(command);
        while d.pending.len() > self.max_pending {
            d.pending.pop_front();
            self.metrics.commands_expired.fetch_add(1, Relaxed);
            tracing::warn!(device, "coap: too many commands waiting; dropped the oldest");
        }
        start_delivery(d, self.observers.contains(device))
    }

    /// Registers `peer`/`token` as the device's observation, replacing an older one. Returns
    /// `None` (not registered) when `max_observers` devices observe already and no other tenant
    /// holds more than the device's own; else whether a delivery should start.
    pub fn observe(&self, device: &str, tenant: &str, peer: SocketAddr, token: Vec<u8>) -> Option<bool> {
        let mut devices = lock(&self.devices);
        self.observers.register(device, tenant, peer, token, 2, ())?;
        Some(start_delivery(self.device(&mut devices, device), true))
    }

    /// Ends an observation: a GET with Observe = 1, or a Reset answering a notification.
    pub fn cancel(&self, device: &str, peer: SocketAddr, token: &[u8]) {
        let _devices = lock(&self.devices);
        self.observers.cancel(device, peer, token);
    }

    /// Ends the device's observation whatever it is (its credentials changed).
    pub fn forget(&self, device: &str) {
        let _devices = lock(&self.devices);
        self.observers.forget(device);
    }

    /// Ends the observation `generation` if it is still the device's (it stopped answering).
    pub fn lost(&self, device: &str, generation: u64) {
        let _devices = lock(&self.devices);
        self.observers.lost(device, generation);
    }

    /// The oldest command waiting for the device (a poll with a plain GET).
    pub fn oldest(&self, device: &str) -> Option<Command> {
        let mut devices = lock(&self.devices);
        let ttl = self.ttl;
        let d = self.device(&mut devices, device);
        expire(d, ttl, &self.metrics);
        d.pending.front().cloned()
    }

    /// The next notification to send: the observer (its sequence number taken) and the oldest
    /// command. `None` ends the delivery task; the next push or registration starts another.
    pub fn next_delivery(&self, device: &str) -> Option<(Observer, Command)> {
        let mut devices = lock(&self.devices);
        let d = devices.get_mut(device)?;
        expire(d, self.ttl, &self.metrics);
        let next = match d.pending.front() {
            Some(command) => self.observers.take_sequence(device).map(|observer| (observer, command.clone())),
            None => None,
        };
        d.delivering = next.is_some();
        next
    }

    /// Takes a command out of the queue: acknowledged, or answered by the device. Returns
    /// whether it was still waiting.
    pub fn done(&self, device: &str, command_id: &str) -> bool {
        let mut devices = lock(&self.devices);
        let Some(d) = devices.get_mut(device) else {
            return false;
        };
        let before = d.pending.len();
        d.pending.retain(|c| c.id != command_id);
        before != d.pending.len()
    }

    /// Devices that went quiet longer than the command TTL, with nothing waiting and no
    /// observation, are forgotten (their commands are no longer kept).
    fn sweep(&self, devices: &mut HashMap<String, Device>) {
        let mut swept = lock(&self.swept);
        if swept.elapsed() < SWEEP_EVERY {
            return;
        }
        *swept = Instant::now();
        let ttl = self.ttl;
        devices.retain(|id, d| !d.pending.is_empty() || d.used.elapsed() < ttl || self.observers.contains(id));
    }
}

/// Whether a delivery task should start now (the device is `observed`); if so it counts as
/// running from here on, so two triggers in a row start one task.
fn start_delivery(d: &mut Device, observed: bool) -> bool {
    let start = observed && !d.pending.is_empty() && !d.delivering;
    d.delivering |= start;
    start
}

fn expire(d: &mut Device, ttl: Duration, metrics: &Metrics) {
    while d.pending.front().is_some_and(|c| c.queued_at.elapsed() > ttl) {
        d.pending.pop_front();
        metrics.commands_expired.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands() -> Commands {
        Commands::new(2, 1, Duration::from_secs(60), Arc::default())
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn representations_embed_json_text_or_base64() {
        assert_eq!(&*Command::new("c1", br#"{"open":true}"#).representation, br#"{"id":"c1","payload":{"open":true}}"#);
        assert_eq!(&*Command::new("c2", b"reboot").representation, br#"{"id":"c2","payload":"reboot"}"#);
        assert_eq!(&*Command::new("c3", &[0xff, 0]).representation, br#"{"id":"c3","payload_base64":"/wA="}"#);
    }

    #[test]
    fn commands_wait_only_for_devices_that_use_coap_and_go_in_order() {
        let c = commands();
        assert!(!c.push("mqtt-only", Command::new("x", b"1")));
        assert_eq!(c.oldest("mqtt-only"), None);
        c.used_by("sensor");
        assert!(!c.push("sensor", Command::new("a", b"1")), "no observer yet");
        assert_eq!(c.observe("sensor", "acme", peer(1), vec![7]), Some(true));
        let (observer, first) = c.next_delivery("sensor").unwrap();
        assert_eq!((observer.token.as_slice(), first.id.as_str()), (&[7u8][..], "a"));
        assert!(!c.push("sensor", Command::new("b", b"2")), "a delivery is running");
        assert!(c.done("sensor", "a"));
        let (observer2, second) = c.next_delivery("sensor").unwrap();
        assert_eq!((second.id.as_str(), observer2.sequence), ("b", observer.sequence + 1));
        assert!(c.done("sensor", "b"));
        assert!(c.next_delivery("sensor").is_none());
        assert!(c.push("sensor", Command::new("c", b"3")), "idle again: a push starts a delivery");
    }

    #[test]
    fn the_newest_registration_wins_and_observers_are_bounded() {
        let c = commands();
        assert_eq!(c.observe("a", "acme", peer(1), vec![1]), Some(false));
        assert_eq!(c.observe("b", "acme", peer(2), vec![2]), None, "max_observers is 1");
        assert_eq!(c.observe("a", "acme", peer(3), vec![3]), Some(false), "re-registration replaces");
        c.cancel("a", peer(1), &[1]);
        c.used_by("a");
        c.push("a", Command::new("z", b"1"));
        assert_eq!(c.next_delivery("a").unwrap().0.peer, peer(3));
        let generation = c.next_delivery("a").unwrap().0.generation;
        c.lost("a", generation);
        assert!(c.next_delivery("a").is_none());
        assert_eq!(c.oldest("a").unwrap().id, "z", "a lost observer leaves the command waiting");
    }

    /// Regression (tenant isolation): one tenant's devices must not hold every observation.
    #[test]
    fn a_tenant_at_the_bound_gives_way_to_another() {
        let c = Commands::new(2, 2, Duration::from_secs(60), Arc::default());
        assert!(c.observe("a1", "acme", peer(1), vec![1]).is_some());
        assert!(c.observe("a2", "acme", peer(2), vec![2]).is_some());
        assert_eq!(c.observe("a3", "acme", peer(3), vec![3]), None, "acme waits for its own");
        assert!(c.observe("g1", "globex", peer(4), vec![4]).is_some(), "globex takes acme's oldest");
        assert_eq!(c.observe("g2", "globex", peer(5), vec![5]), None, "now even: nobody gives way");
        c.used_by("a1");
        c.push("a1", Command::new("x", b"1"));
        assert!(c.next_delivery("a1").is_none(), "a1's observation was the oldest and ended");
        c.used_by("a2");
        c.push("a2", Command::new("y", b"1"));
        assert!(c.next_delivery("a2").is_some());
    }

    #[test]
    fn queues_are_bounded() {
        let c = commands();
        c.used_by("d");
        for id in ["1", "2", "3"] {
            c.push("d", Command::new(id, b"x"));
        }
        assert_eq!(c.oldest("d").unwrap().id, "2");
        assert_eq!(c.metrics.commands_expired.load(Relaxed), 1);
    }
}
