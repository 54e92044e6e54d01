//! When to retry a failed delivery, and when to give up: exponential backoff with
//! jitter, for at least `retry_for` after the first failure. Pure, so the schedule is
//! tested without waiting for it.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay before the first retry; each next one doubles it.
    pub first: Duration,
    /// The longest delay between two attempts.
    pub max: Duration,
    /// Retries go on at least this long after the first failure.
    pub retry_for: Duration,
}

impl RetryPolicy {
    /// The schedule without jitter: `first × 2^retry`, at most `max` (`retry` 0 is the
    /// first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1_u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// After a failed attempt: the wait before retry number `retry`, or `None` to give up
    /// because `since_first_failure` has reached `retry_for`. Giving up only then means
    /// the last attempt comes at least `retry_for` after the first failure. `unit` in
    /// [0, 1] picks the jitter: the delay lands in [half, all] of the schedule, so that
    /// events failed together (a receiver down) do not all come back at once.
    pub fn next(&self, retry: u32, since_first_failure: Duration, unit: f64) -> Option<Duration> {
        if since_first_failure >= self.retry_for {
            return None;
        }
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            1.0
        };
        Some(self.delay(retry).mul_f64(0.5 + 0.5 * unit))
    }
}

impl Default for RetryPolicy {
    /// 1 s doubling to 60 s, for 10 minutes.
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            retry_for: Duration::from_secs(600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_to_a_minute() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (0..10).map(|r| p.delay(r).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(p.delay(40), Duration::from_secs(60), "no overflow");
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_schedule() {
        let p = RetryPolicy::default();
        let at = |unit| p.next(3, Duration::ZERO, unit).unwrap();
        assert_eq!(at(0.0), Duration::from_secs(4));
        assert_eq!(at(1.0), Duration::from_secs(8));
        assert_eq!(at(0.5), Duration::from_secs(6));
        assert_eq!(at(-3.0), at(0.0));
        assert_eq!(at(7.0), at(1.0));
        assert_eq!(at(f64::NAN), at(1.0));
    }

    /// Whatever the jitter, attempts go on for at least 10 minutes after the first failure,
    /// and stop within one longest delay after that.
    #[test]
    fn retries_for_at_least_ten_minutes_then_gives_up() {
        let p = RetryPolicy::default();
        for unit in [0.0, 0.37, 1.0] {
            let mut since = Duration::ZERO; // the first failure is attempt 0
            let mut retries = 0;
            while let Some(wait) = p.next(retries, since, unit) {
                since += wait; // the retry happens and fails
                retries += 1;
            }
            assert!(since >= Duration::from_secs(600), "{unit}: {since:?}");
            assert!(since < Duration::from_secs(660), "{unit}: {since:?}");
            assert!(retries >= 14, "{unit}: {retries}");
        }
        assert_eq!(p.next(0, Duration::from_secs(600), 0.5), None);
    }
}
