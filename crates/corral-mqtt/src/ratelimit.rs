//! Token bucket for the per-client publish rate limit.

use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// Tokens refill continuously at `rate` per second up to `burst`; one PUBLISH takes one.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            rate_per_sec: f64::from(limit.messages_per_second),
            burst: f64::from(limit.burst),
            tokens: f64::from(limit.burst),
            refilled_at: now,
        }
    }

    /// Takes one token; when the bucket is empty, returns how long until one is available.
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        self.refilled_at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 { None } else { Some(Duration::from_secs_f64(-self.tokens / self.rate_per_sec)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_paces() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(RateLimit { messages_per_second: 10, burst: 3 }, t0);
        assert_eq!(bucket.take(t0), None);
        assert_eq!(bucket.take(t0), None);
        assert_eq!(bucket.take(t0), None);
        let wait = bucket.take(t0).expect("empty");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6);
        // after the wait the debt is paid
        assert_eq!(bucket.take(t0 + Duration::from_millis(200)), None);
    }
}
