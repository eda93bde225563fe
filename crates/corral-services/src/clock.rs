//! Time as the platform reads it. Rooms whose behaviour depends on the time (rule windows,
//! absence, alarm times, outbox retries) read a [`Clock`] they were given, so a test moves a
//! [`ManualClock`] forward instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Wall-clock time, as Unix nanoseconds.
pub trait Clock: Send + Sync + 'static {
    fn now_ns(&self) -> i64;

    fn now_ms(&self) -> i64 {
        self.now_ns().div_euclid(1_000_000)
    }
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told to. Clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn at(now_ns: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now_ns)))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(i64::try_from(by.as_nanos()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = ManualClock::at(1_000_000_000);
        let shared = clock.clone();
        clock.advance(Duration::from_millis(1500));
        assert_eq!((shared.now_ns(), shared.now_ms()), (2_500_000_000, 2_500));
        assert!(SystemClock.now_ms() > 1_700_000_000_000, "after 2023");
    }
}
