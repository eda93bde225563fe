//! Counters for `/metrics`: requests by response code, what was dropped and why, and the
//! server's own state (uploads, observers of commands and of desired twin documents).

use corral_services::metrics::Exposition;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    /// `coap` or `coaps`: the metric names' prefix after `corral_`, so both servers can report.
    pub name: &'static str,
    /// Requests answered, by response class: 2.xx, 4.xx, 5.xx.
    pub answered: [AtomicU64; 3],
    /// Datagrams that were not CoAP (answered with RST if Confirmable, else dropped).
    pub malformed: AtomicU64,
    /// Requests seen again within the exchange lifetime (answered from memory, not redone).
    pub duplicates: AtomicU64,
    /// Exchanges forgotten before their lifetime because `max_exchanges` was reached.
    pub exchanges_evicted: AtomicU64,
    /// Requests refused because `max_in_flight` were already being processed.
    pub overloaded: AtomicU64,
    /// Confirmable messages of ours sent again for want of an ACK, and those never acknowledged.
    pub retransmissions: AtomicU64,
    pub unacknowledged: AtomicU64,
    /// Separate responses (the durable write took longer than `piggyback_wait`).
    pub separate_responses: AtomicU64,
    pub commands_delivered: AtomicU64,
    pub commands_expired: AtomicU64,
    /// Desired twin documents acknowledged by an observing device.
    pub desired_delivered: AtomicU64,
}

/// The server's state at the moment `/metrics` is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Block-wise uploads being assembled.
    pub uploads: usize,
    /// Devices observing their commands.
    pub command_observers: usize,
    /// Devices observing their desired twin document.
    pub desired_observers: usize,
}

impl Metrics {
    pub fn new(name: &'static str) -> Metrics {
        Metrics { name, ..Metrics::default() }
    }

    pub fn answered(&self, code: crate::message::Code) {
        let slot = match code.class() {
            2 => 0,
            4 => 1,
            5 => 2,
            _ => return,
        };
        self.answered[slot].fetch_add(1, Relaxed);
    }

    /// Appends the Prometheus text of every counter and of `gauges`.
    pub fn render(&self, out: &mut String, gauges: Gauges) {
        let door = self.name;
        let mut e = Exposition::new(out);
        let help = "CoAP requests answered, by response class.";
        let mut requests = e.family(&format!("corral_{door}_requests_total"), help, "counter");
        for (class, answered) in ["2xx", "4xx", "5xx"].into_iter().zip(&self.answered) {
            requests.sample(&[("class", class)], answered.load(Relaxed));
        }
        let counters: [(&str, &str, &AtomicU64); 10] = [
            ("malformed", "Datagrams that were not well-formed CoAP.", &self.malformed),
            ("duplicates", "Requests received again and answered from memory.", &self.duplicates),
            (
                "exchanges_evicted",
                "Remembered exchanges forgotten early because max_exchanges was reached.",
                &self.exchanges_evicted,
            ),
            ("overloaded", "Requests refused because max_in_flight were in progress.", &self.overloaded),
            ("retransmissions", "Confirmable messages of the server sent again for want of an ACK.", &self.retransmissions),
            ("unacknowledged", "Confirmable messages of the server never acknowledged.", &self.unacknowledged),
            ("separate_responses", "Answers sent as separate responses after an empty ACK.", &self.separate_responses),
            ("commands_delivered", "Commands acknowledged by a CoAP device.", &self.commands_delivered),
            ("commands_expired", "Commands dropped unfetched (too old or too many waiting).", &self.commands_expired),
            ("desired_delivered", "Desired twin documents acknowledged by an observing device.", &self.desired_delivered),
        ];
        for (name, help, counter) in counters {
            e.counter(&format!("corral_{door}_{name}_total"), help, counter.load(Relaxed));
        }
        for (name, help, value) in [
            ("observers", "Devices observing their commands.", gauges.command_observers),
            ("desired_observers", "Devices observing their desired twin document.", gauges.desired_observers),
            ("uploads", "Block-wise uploads being assembled.", gauges.uploads),
        ] {
            e.gauge(&format!("corral_{door}_{name}"), help, value);
        }
    }
}
