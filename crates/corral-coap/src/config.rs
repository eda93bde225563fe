//! The `[coap]` settings the server runs with.

use std::time::Duration;

/// Limits and timings of the CoAP server. `Default` gives RFC 7252's transmission parameters
/// and limits that bound memory under any load.
#[derive(Debug, Clone, PartialEq)]
pub struct CoapConfig {
    /// The largest request body, whole or assembled from Block1 blocks (4.13 beyond it).
    pub max_body_bytes: usize,
    /// How long a Confirmable request may wait for its durable write before the server sends an
    /// empty ACK and answers later in a separate response. Below RFC 7252's ACK_TIMEOUT (2 s)
    /// so the client does not retransmit meanwhile; zero acknowledges every request at once.
    pub piggyback_wait: Duration,
    /// ACK_TIMEOUT for the server's own Confirmable messages (separate responses and
    /// notifications); doubled per retransmission, MAX_RETRANSMIT times.
    pub ack_timeout: Duration,
    pub max_retransmit: u32,
    /// How long a request's answer is remembered to answer a duplicate (EXCHANGE_LIFETIME).
    pub exchange_lifetime: Duration,
    /// Remembered exchanges at most; beyond it the oldest are forgotten early (and counted).
    pub max_exchanges: usize,
    /// Requests being processed at once; beyond it Confirmable requests get 5.03 with Max-Age.
    pub max_in_flight: usize,
    /// Block size the server answers with (and lowers larger client blocks to): 16..=1024.
    pub block_bytes: usize,
    /// Block-wise uploads being assembled at once, and how long one may pause between blocks.
    /// When the table is full, the tenant holding the most gives up its stalest (see
    /// `blockwise.rs`), so one tenant cannot keep the others out.
    pub max_uploads: usize,
    /// Block-wise uploads one device may have in progress at once.
    pub max_uploads_per_device: usize,
    pub upload_idle: Duration,
    /// Devices observing their commands at once (a device has one observation: its newest);
    /// the same bound, separately, for devices observing their desired twin document.
    pub max_observers: usize,
    /// Commands waiting per device for a CoAP device to fetch them, and how long each waits.
    pub max_pending_commands: usize,
    pub command_ttl: Duration,
}

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            max_body_bytes: 1 << 20,
            piggyback_wait: Duration::from_millis(1000),
            ack_timeout: Duration::from_secs(2),
            max_retransmit: 4,
            exchange_lifetime: Duration::from_secs(247),
            max_exchanges: 100_000,
            max_in_flight: 4096,
            block_bytes: 1024,
            max_uploads: 1024,
            max_uploads_per_device: 8,
            upload_idle: Duration::from_secs(60),
            max_observers: 100_000,
            max_pending_commands: 64,
            command_ttl: Duration::from_secs(3600),
        }
    }
}

impl CoapConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(16..=1024).contains(&self.block_bytes) || !self.block_bytes.is_power_of_two() {
            return Err(format!("block_bytes must be a power of two from 16 to 1024, got {}", self.block_bytes));
        }
        if self.piggyback_wait >= self.ack_timeout {
            return Err("piggyback_wait must be shorter than ack_timeout, or clients retransmit meanwhile".into());
        }
        for (name, value) in [
            ("max_exchanges", self.max_exchanges),
            ("max_in_flight", self.max_in_flight),
            ("max_uploads", self.max_uploads),
            ("max_uploads_per_device", self.max_uploads_per_device),
            ("max_observers", self.max_observers),
            ("max_pending_commands", self.max_pending_commands),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}
