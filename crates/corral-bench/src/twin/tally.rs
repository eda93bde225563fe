//! What arrived against what was sent. Every accepted change (answered 200 / PUBACK) must arrive
//! exactly once, at its own device, carrying its `seq`; its latency is the first such arrival minus
//! the time it was sent. Of the changes that never arrived, those whose device later received a
//! newer change are *superseded* (a twin carries the whole document, so a device that missed one
//! version loses nothing once the next arrives; Corral may fold quick successive changes of one
//! device into one publish); the others are *missing*.

use super::drive::Change;
use super::fleet::Arrival;

#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    /// Accepted changes that arrived at their device (the first arrival of each).
    pub delivered: u64,
    pub missing: u64,
    pub superseded: u64,
    /// Arrivals of an accepted change beyond its first at its device.
    pub duplicates: u64,
    /// Arrivals of a change at a device it was not for.
    pub misrouted: u64,
    /// Arrivals without a `seq` the benchmark sent and had accepted.
    pub unexpected: u64,
    /// Delivery latencies, ns, ascending.
    pub latencies_ns: Vec<u64>,
    /// A few missing changes, for the notes: (seq, device).
    pub first_missing: Vec<(u64, u32)>,
    /// The slowest deliveries, slowest first: (seq, latency ns).
    pub slowest: Vec<(u64, u64)>,
}

/// Slowest deliveries kept for the notes.
const SLOWEST: usize = 3;

/// `changes` must be in `seq` order, `seq` counted from 1 (as the drivers make them).
pub fn tally(changes: &[Change], arrivals: &[Arrival]) -> Tally {
    let mut t = Tally::default();
    // Per change: arrivals at its device and the first of them.
    let mut count = vec![0u64; changes.len()];
    let mut first = vec![u64::MAX; changes.len()];
    // Per device: the newest seq it received.
    let mut newest: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for a in arrivals {
        let Some(i) = a.seq.and_then(|s| s.checked_sub(1)).map(|s| s as usize).filter(|&i| i < changes.len()) else {
            t.unexpected += 1;
            continue;
        };
        let c = &changes[i];
        if c.acked_ns.is_none() {
            t.unexpected += 1;
        } else if c.device != a.device {
            t.misrouted += 1;
        } else {
            count[i] += 1;
            first[i] = first[i].min(a.at_ns);
            let n = newest.entry(a.device).or_default();
            *n = (*n).max(c.seq);
        }
    }
    for (i, c) in changes.iter().enumerate() {
        if c.acked_ns.is_none() {
            continue;
        }
        match count[i] {
            0 if newest.get(&c.device).is_some_and(|&n| n > c.seq) => t.superseded += 1,
            0 => {
                t.missing += 1;
                if t.first_missing.len() < 5 {
                    t.first_missing.push((c.seq, c.device));
                }
            }
            n => {
                t.delivered += 1;
                t.duplicates += n - 1;
                let latency = first[i].saturating_sub(c.sent_ns);
                t.latencies_ns.push(latency);
                t.slowest.push((c.seq, latency));
            }
        }
    }
    t.latencies_ns.sort_unstable();
    t.slowest.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    t.slowest.truncate(SLOWEST);
    t
}

impl Tally {
    /// Remarks for the report: whatever was not a clean exactly-once delivery.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.missing > 0 {
            let some: Vec<String> = self.first_missing.iter().map(|(s, d)| format!("seq {s} (device {d})")).collect();
            notes.push(format!("{} changes never arrived, first: {}", self.missing, some.join(", ")));
        }
        if self.superseded > 0 {
            notes.push(format!("{} changes superseded by a newer one before delivery", self.superseded));
        }
        if self.duplicates > 0 {
            notes.push(format!("{} duplicate deliveries", self.duplicates));
        }
        if self.misrouted > 0 {
            notes.push(format!("{} deliveries at the wrong device", self.misrouted));
        }
        if self.unexpected > 0 {
            notes.push(format!("{} messages that were no accepted change of this run", self.unexpected));
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64, device: u32, sent_ns: u64, accepted: bool) -> Change {
        Change { seq, device, due_ns: sent_ns, sent_ns, acked_ns: accepted.then_some(sent_ns + 1) }
    }

    fn arrival(device: u32, seq: u64, at_ns: u64) -> Arrival {
        Arrival { device, seq: Some(seq), at_ns }
    }

    #[test]
    fn exactly_once_deliveries_give_latencies() {
        let changes = [change(1, 0, 100, true), change(2, 1, 200, true)];
        let t = tally(&changes, &[arrival(1, 2, 250), arrival(0, 1, 130)]);
        assert_eq!((t.delivered, t.missing, t.duplicates, t.misrouted, t.unexpected), (2, 0, 0, 0, 0));
        assert_eq!(t.latencies_ns, vec![30, 50]);
        assert_eq!(t.slowest, vec![(2, 50), (1, 30)]);
        assert!(t.notes().is_empty());
    }

    #[test]
    fn duplicates_count_once_with_the_first_arrival() {
        let t = tally(&[change(1, 0, 100, true)], &[arrival(0, 1, 180), arrival(0, 1, 150)]);
        assert_eq!((t.delivered, t.duplicates), (1, 1));
        assert_eq!(t.latencies_ns, vec![50]);
    }

    #[test]
    fn a_change_overtaken_at_its_device_is_superseded_not_missing() {
        let changes = [change(1, 0, 100, true), change(2, 1, 110, true), change(3, 0, 120, true), change(4, 1, 130, true)];
        let t = tally(&changes, &[arrival(0, 3, 200)]);
        assert_eq!((t.delivered, t.superseded, t.missing), (1, 1, 2));
        assert_eq!(t.first_missing, vec![(2, 1), (4, 1)]);
    }

    #[test]
    fn refused_changes_are_not_expected_and_strangers_are_counted() {
        let changes = [change(1, 0, 100, false), change(2, 1, 100, true)];
        let arrivals = [arrival(0, 1, 150), arrival(0, 2, 150), arrival(1, 9, 150), Arrival { device: 1, seq: None, at_ns: 1 }];
        let t = tally(&changes, &arrivals);
        assert_eq!((t.delivered, t.missing, t.misrouted, t.unexpected), (0, 1, 1, 3));
    }
}
