//! Which devices hold an MQTT connection now, for presence (`online`).

use corral_services::{Connection, Connections};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Devices with a live MQTT connection, counted per device (a takeover connects the new session
/// before the old one's disconnect is reported, so a set would briefly call the device offline),
/// and when each device's last connection ended.
#[derive(Debug, Default, Clone)]
pub struct ConnectedDevices(Arc<Mutex<Live>>);

#[derive(Debug, Default)]
struct Live {
    live: HashMap<String, usize>,
    ended_ns: HashMap<String, i64>,
}

impl ConnectedDevices {
    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many devices hold at least one connection.
    pub fn count(&self) -> usize {
        self.lock().live.len()
    }

    pub(super) fn change(&self, device: &str, up: bool, at_ns: i64) {
        let mut c = self.lock();
        if up {
            *c.live.entry(device.to_string()).or_default() += 1;
        } else if let Some(n) = c.live.get_mut(device) {
            *n -= 1;
            if *n == 0 {
                c.live.remove(device);
                c.ended_ns.insert(device.to_string(), at_ns);
            }
        }
    }
}

impl Connections for ConnectedDevices {
    fn connection(&self, device: &str) -> Connection {
        let c = self.lock();
        Connection { connected: c.live.contains_key(device), ended_ns: c.ended_ns.get(device).copied() }
    }
}
