//! Devices observing their desired twin document, `devices/<id>/twin/desired` (RFC 7641), and
//! the pushes that bring them every durable desired change.
//!
//! The document a device receives is always whole, with its version (`{"version": N, "desired":
//! {...}}`, from `corral_services::DeviceTwins`), so a missed notification loses nothing: the next
//! one, or the answer to the next registration, carries everything. That is how a change made
//! while a device slept reaches it, even after a `kill -9`: observations live in memory, and a
//! device that wakes registers again and finds the current document in the answer.
//!
//! - The Observe number of a document is its version (low 24 bits): increasing as RFC 7641
//!   asks, so a client's freshness check orders documents as their versions do, whichever of a
//!   notification and a registration answer arrives first.
//! - A device has at most one push running. Notices that arrive meanwhile coalesce into its next
//!   round, which reads the document then (quick successive changes cost one notification); a
//!   version the observation already carried is never sent again. No push starts before the
//!   registration is answered.
//! - A notification not acknowledged after the retransmissions, or answered with Reset, ends
//!   the observation (RFC 7641 §4.5); the device registers again when it wakes.
//! - When the change notices lagged, every observed device's document is read again and pushed
//!   if it is newer than the one the device has.
//!
//! The table is bounded and tenant-fair like the commands' ([`Observers`], `max_observers`
//! each).

use crate::exchange::Delivery;
use crate::hooks::Speaker;
use crate::message::{Code, Kind, Message, encode_uint, option};
use crate::observers::Observers;
use crate::request::{self, Response, Then};
use crate::server::Shared;
use corral_model::DeviceId;
use corral_services::{DesiredMessage, DesiredNotice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::Semaphore;
use tokio::sync::broadcast::{self, error::RecvError};

/// What a desired observation keeps beside its endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Push {
    /// The newest version sent on this observation (its registration answer or a notification).
    known: u64,
    /// A push task holds this observation, or its registration is still being answered.
    busy: bool,
    /// A change was noticed since the push last read the document.
    wanted: bool,
}

/// The observations of desired documents, and how many documents are read at once to push
/// them (after a lag every observed device wants one).
pub struct DesiredObservers {
    observers: Observers<Push>,
    reads: Semaphore,
}

/// Documents read at once for pushes.
const CONCURRENT_READS: usize = 32;

/// The Observe number of a document: its version, in the option's 24 bits.
pub fn observe_number(version: u64) -> u32 {
    (version & 0xff_ffff) as u32
}

impl DesiredObservers {
    pub fn new(max_observers: usize) -> DesiredObservers {
        DesiredObservers {
            observers: Observers::new(max_observers, "desired documents"),
            reads: Semaphore::new(CONCURRENT_READS),
        }
    }

    /// Devices observing their desired document now.
    pub fn len(&self) -> usize {
        self.observers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.observers.is_empty()
    }

    /// Registers the device's observation (replacing an older one), held back from pushes until
    /// [`DesiredObservers::resume`]. `None` when the table has no room for it.
    pub fn register(&self, device: &str, tenant: &str, peer: SocketAddr, token: Vec<u8>) -> Option<u64> {
        let held = Push { known: 0, busy: true, wanted: false };
        self.observers.register(device, tenant, peer, token, 0, held)
    }

    /// The registration `generation` is answered with `version`.
    pub fn answered(&self, device: &str, generation: u64, version: u64) {
        self.observers.with(device, |o| {
            if o.generation == generation {
                o.state.known = o.state.known.max(version);
            }
        });
    }

    /// The registration's answer is sent: true if a push should start for changes noticed
    /// meanwhile (it then counts as running).
    pub fn resume(&self, device: &str, generation: u64) -> bool {
        self.observers
            .with(device, |o| {
                if o.generation != generation {
                    return false;
                }
                o.state.busy = o.state.wanted;
                o.state.wanted
            })
            .unwrap_or(false)
    }

    /// A GET with Observe = 1.
    pub fn cancel(&self, device: &str, peer: SocketAddr, token: &[u8]) {
        self.observers.cancel(device, peer, token);
    }

    /// The device's credentials changed: it registers again with what holds now.
    pub fn forget(&self, device: &str) {
        self.observers.forget(device);
    }

    /// Ends the observation `generation` (not answered, or its registration failed).
    pub fn lost(&self, device: &str, generation: u64) {
        self.observers.lost(device, generation);
    }

    /// `version` of the device's document is durable: the generation to start a push for, if
    /// the device observes, lacks that version and has no push running.
    pub fn notice(&self, device: &str, version: u64) -> Option<u64> {
        self.observers.with(device, |o| if version > o.state.known { want(o.generation, &mut o.state) } else { None }).flatten()
    }

    /// Notices were lost: every observation wants its document read again. Returns the pushes
    /// to start.
    pub fn notice_all(&self) -> Vec<(DeviceId, u64)> {
        self.observers.each(|device, o| Some((DeviceId::new(device).ok()?, want(o.generation, &mut o.state)?)))
    }

    /// Whether the push of `generation` goes another round (a change was noticed since its last
    /// read); when not, it ends and the next notice starts another.
    pub fn next_round(&self, device: &str, generation: u64) -> bool {
        self.observers
            .with(device, |o| {
                if o.generation != generation {
                    return false;
                }
                let again = std::mem::take(&mut o.state.wanted);
                o.state.busy = again;
                again
            })
            .unwrap_or(false)
    }

    /// The push of `generation` stops early (its read failed); the next notice starts another.
    pub fn idle(&self, device: &str, generation: u64) {
        self.observers.with(device, |o| {
            if o.generation == generation {
                o.state.busy = false;
            }
        });
    }

    /// Where to send `version` on the observation `generation`, if it is still the device's and
    /// has not carried that version yet (it then counts as sent).
    pub fn sendable(&self, device: &str, generation: u64, version: u64) -> Option<(SocketAddr, Vec<u8>)> {
        self.observers
            .with(device, |o| {
                if o.generation != generation || version <= o.state.known {
                    return None;
                }
                o.state.known = version;
                Some((o.peer, o.token.clone()))
            })
            .flatten()
    }
}

/// Marks a push wanted; returns `generation` when none runs (one now counts as running).
fn want(generation: u64, push: &mut Push) -> Option<u64> {
    push.wanted = true;
    let start = !push.busy;
    push.busy = true;
    start.then_some(generation)
}

/// The document as a 2.05 with its Observe number (a registration answer or a notification).
fn document(message: &DesiredMessage, observed: bool) -> Response {
    let mut response = Response::content(message.payload.to_vec());
    if observed {
        response.options.push((option::OBSERVE, encode_uint(observe_number(message.version))));
    }
    response
}

/// `GET devices/<id>/twin/desired`: the current document; with Observe 0 the observation is
/// registered first (so no change falls between the read and the notices), with Observe 1 it
/// ends. A later block of a block-wise document neither registers nor ends anything (RFC 7959
/// §2.6). When the table is full the answer has no Observe: the device is not registered.
pub(crate) async fn get(shared: &Shared, peer: SocketAddr, request: &Message, speaker: &Speaker) -> Result<Response, Response> {
    let device = speaker.device.as_str();
    let observe = request.uint(option::OBSERVE).map_err(|_| Response::error(Code::BAD_OPTION, "invalid Observe option"))?;
    let later_block = request.option(option::BLOCK2).and_then(crate::block::Block::parse).is_some_and(|b| b.num > 0);
    let registered = match observe {
        Some(0) if !later_block => shared.desired.register(device, speaker.tenant.as_str(), peer, request.token.clone()),
        Some(1) if !later_block => {
            shared.desired.cancel(device, peer, &request.token);
            None
        }
        _ => None,
    };
    let message = match shared.twin_service.desired(&speaker.device).await {
        Ok(message) => message,
        Err(e) => {
            if let Some(generation) = registered {
                shared.desired.lost(device, generation);
            }
            return Err(e.into());
        }
    };
    let Some(generation) = registered else { return Ok(document(&message, false)) };
    shared.desired.answered(device, generation, message.version);
    let mut response = document(&message, true);
    response.then = Some(Then::PushDesired(speaker.device.clone(), generation));
    Ok(response)
}

/// The registration `generation` is answered: pushes may start (at once if changes came
/// meanwhile).
pub(crate) fn resume(shared: &Arc<Shared>, device: DeviceId, generation: u64) {
    if shared.desired.resume(device.as_str(), generation) {
        tokio::spawn(push(shared.clone(), device, generation));
    }
}

/// Pushes the device's document to the observation `generation` until no change waits, one
/// Confirmable notification at a time.
async fn push(shared: Arc<Shared>, device: DeviceId, generation: u64) {
    let id = device.as_str();
    let path = format!("devices/{id}/twin/desired");
    while shared.desired.next_round(id, generation) {
        let read = {
            let _permit = shared.desired.reads.acquire().await;
            shared.twin_service.desired(&device).await
        };
        let message = match read {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(device = id, error = %e, "coap: desired document not read; the next change or registration brings it");
                shared.desired.idle(id, generation);
                return;
            }
        };
        let Some((peer, token)) = shared.desired.sendable(id, generation, message.version) else { continue };
        let notification = request::cut_blocks(&shared, peer, &path, None, document(&message, true));
        match shared.exchanges.send_confirmable(peer, notification.message(Kind::Confirmable, 0, token)).await {
            Delivery::Acknowledged => {
                shared.metrics.desired_delivered.fetch_add(1, Relaxed);
                tracing::debug!(device = id, version = message.version, "coap desired document delivered");
            }
            outcome => {
                tracing::info!(device = id, version = message.version, ?outcome, "coap desired observation ended");
                shared.desired.lost(id, generation);
                return;
            }
        }
    }
}

/// Every durable desired change is pushed to the device if it observes; after a lag, every
/// observed device's document is read again. Ends with the server.
pub(crate) async fn hear_desired_changes(shared: std::sync::Weak<Shared>, mut changes: broadcast::Receiver<DesiredNotice>) {
    loop {
        let notice = changes.recv().await;
        let Some(shared) = shared.upgrade() else { return };
        match notice {
            Ok(notice) => {
                if let Some(generation) = shared.desired.notice(notice.device.as_str(), notice.version) {
                    tokio::spawn(push(shared, notice.device, generation));
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "desired changes came faster than CoAP took them; reading every observed document");
                for (device, generation) in shared.desired.notice_all() {
                    tokio::spawn(push(shared.clone(), device, generation));
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn no_push_starts_before_the_registration_is_answered_and_changes_meanwhile_follow_it() {
        let d = DesiredObservers::new(10);
        let generation = d.register("t1", "acme", peer(1), vec![1]).unwrap();
        assert_eq!(d.notice("t1", 4), None, "held until answered");
        d.answered("t1", generation, 3);
        assert!(d.resume("t1", generation), "version 4 came meanwhile: a push starts");
        assert!(d.next_round("t1", generation));
        assert_eq!(d.sendable("t1", generation, 4), Some((peer(1), vec![1])));
        assert_eq!(d.sendable("t1", generation, 4), None, "never the same version twice");
        assert!(!d.next_round("t1", generation), "nothing else came: the push ends");
        assert_eq!(d.notice("t1", 4), None, "the device has version 4");
        assert_eq!(d.notice("t1", 5), Some(generation));
        assert_eq!(d.notice("t1", 6), None, "one push at a time: it takes 6 on its next round");
    }

    #[test]
    fn a_registration_answered_with_the_newest_version_needs_no_push() {
        let d = DesiredObservers::new(10);
        let generation = d.register("t1", "acme", peer(1), vec![1]).unwrap();
        d.answered("t1", generation, 2);
        assert!(!d.resume("t1", generation));
        assert_eq!(d.notice("t1", 2), None, "the notice of the version answered");
        assert_eq!(d.notice("t1", 1), None);
    }

    #[test]
    fn a_newer_registration_outlives_the_older_ones_push() {
        let d = DesiredObservers::new(10);
        let old = d.register("t1", "acme", peer(1), vec![1]).unwrap();
        d.answered("t1", old, 1);
        d.resume("t1", old);
        assert_eq!(d.notice("t1", 2), Some(old));
        let new = d.register("t1", "acme", peer(2), vec![2]).unwrap();
        assert!(!d.next_round("t1", old), "the old push ends");
        assert_eq!(d.sendable("t1", old, 2), None);
        d.lost("t1", old);
        d.answered("t1", new, 2);
        assert!(!d.resume("t1", new));
        assert_eq!(d.notice("t1", 3), Some(new), "the new observation is intact");
    }

    #[test]
    fn after_a_lag_every_idle_observation_reads_its_document_again() {
        let d = DesiredObservers::new(10);
        for (device, port) in [("a", 1), ("b", 2)] {
            let generation = d.register(device, "acme", peer(port), vec![1]).unwrap();
            d.answered(device, generation, 1);
            d.resume(device, generation);
        }
        let busy = d.notice("a", 2).unwrap();
        let mut started: Vec<String> = d.notice_all().into_iter().map(|(device, _)| device.to_string()).collect();
        started.sort();
        assert_eq!(started, ["b"], "a's push is running and takes the re-read on its next round");
        assert!(d.next_round("a", busy));
        assert_eq!(d.sendable("b", 99, 5), None, "another generation's push sends nothing");
    }

    #[test]
    fn observe_numbers_are_the_versions_24_low_bits() {
        assert_eq!(observe_number(7), 7);
        assert_eq!(observe_number((1 << 24) + 5), 5);
    }
}
