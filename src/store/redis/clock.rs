//! Redis's clock as seen from this replica, so deadlines can be set on it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Redis's clock minus ours, estimated from the `now` that every hot-path script returns,
/// so a check can carry a deadline on Redis's clock without an extra round trip.
///
/// A sample (Redis's time when the script ran, minus our time when we sent it) can only
/// over-estimate the offset, by the request's delay; the smallest recent sample is the
/// tightest estimate that never makes a timely call look late. It is re-seeded every
/// 10 s to follow clock drift, and from any call that came back past its deadline, in
/// case our clock stepped back.
#[derive(Debug)]
pub(super) struct ClockOffset {
    offset_ms: AtomicI64,
    /// Local ms when the estimate was last re-seeded; 0 = no estimate yet.
    seeded_at_ms: AtomicI64,
}

const OFFSET_RESEED_MS: i64 = 10_000;

impl ClockOffset {
    pub(super) fn new() -> Self {
        ClockOffset {
            offset_ms: AtomicI64::new(0),
            seeded_at_ms: AtomicI64::new(0),
        }
    }

    /// Deadline on Redis's clock for a call sent at local `sent_ms`; 0 (none) until
    /// there is an estimate.
    pub(super) fn deadline(&self, sent_ms: i64, timeout: Duration) -> i64 {
        if self.seeded_at_ms.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        sent_ms + self.offset_ms.load(Ordering::Relaxed) + timeout.as_millis() as i64
    }

    /// Redis's clock now, as estimated from here (our own clock until a first sample).
    pub(super) fn redis_now_ms(&self, local_now_ms: i64) -> i64 {
        if self.seeded_at_ms.load(Ordering::Relaxed) == 0 {
            return local_now_ms;
        }
        local_now_ms + self.offset_ms.load(Ordering::Relaxed)
    }

    pub(super) fn observe(&self, sent_ms: i64, redis_now_ms: i64, late: bool) {
        let sample = redis_now_ms - sent_ms;
        let seeded = self.seeded_at_ms.load(Ordering::Relaxed);
        if late || seeded == 0 || sent_ms - seeded > OFFSET_RESEED_MS {
            self.offset_ms.store(sample, Ordering::Relaxed);
            self.seeded_at_ms.store(sent_ms.max(1), Ordering::Relaxed);
        } else {
            self.offset_ms.fetch_min(sample, Ordering::Relaxed);
        }
    }
}

pub(super) fn local_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offset_takes_the_tightest_sample_and_reseeds() {
        let clock = ClockOffset::new();
        let timeout = Duration::from_millis(100);
        assert_eq!(
            clock.deadline(1_000, timeout),
            0,
            "no deadline before any sample"
        );
        // Redis is 5_000 ms ahead; samples include 3 and 1 ms of delay.
        clock.observe(1_000, 6_003, false);
        clock.observe(1_010, 6_011, false);
        clock.observe(1_020, 6_025, false);
        assert_eq!(clock.deadline(2_000, timeout), 2_000 + 5_001 + 100);
        // A reply past its deadline re-seeds (our clock may have stepped back 50 ms).
        clock.observe(1_030, 6_080, true);
        assert_eq!(clock.deadline(2_000, timeout), 2_000 + 5_050 + 100);
        // After the re-seed period, the next sample replaces the estimate.
        clock.observe(
            1_030 + OFFSET_RESEED_MS + 1,
            6_030 + OFFSET_RESEED_MS + 1 + 7,
            false,
        );
        assert_eq!(clock.deadline(0, timeout), 5_007 + 100);
    }
}
