//! How an action reaches the world outside Corral: a signed webhook POST or a NATS publish.
//! The outbox decides *when* to try (and retries); this module makes one attempt and says
//! whether a failure is worth retrying.

pub mod nats;
pub mod policy;
pub mod webhook;

/// Why one delivery attempt failed. `retryable: false` (a target the policy denies, a malformed
/// URL) goes straight to the dead-letter; everything else is tried again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub message: String,
    pub retryable: bool,
}

impl AttemptError {
    pub fn retry(message: impl Into<String>) -> Self {
        AttemptError { message: message.into(), retryable: true }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        AttemptError { message: message.into(), retryable: false }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
