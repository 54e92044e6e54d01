//! A warning that can fire on every request (a store outage seen by each check) is
//! logged at most once per interval, with how many were folded into it: logs stay
//! readable during exactly the incident they are for, and the metrics count every case.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub struct LogThrottle {
    every_ms: i64,
    next_ms: AtomicI64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub const fn new(every_ms: i64) -> Self {
        LogThrottle {
            every_ms,
            next_ms: AtomicI64::new(i64::MIN),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, mentioning the `n` occurrences not logged since the last line.
    /// `None`: stay quiet (counted for the next line).
    pub fn allow(&self, now_ms: i64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms + self.every_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let t = LogThrottle::new(1_000);
        assert_eq!(t.allow(0), Some(0));
        assert_eq!(t.allow(10), None);
        assert_eq!(t.allow(999), None);
        assert_eq!(t.allow(1_000), Some(2));
        assert_eq!(t.allow(1_500), None);
        assert_eq!(t.allow(5_000), Some(1));
    }
}
