//! Sliding request/token windows with bounded memory.
//!
//! A window of length `W` is kept as at most `SUB_BUCKETS + 1` sub-buckets of width
//! `g = ceil(W / SUB_BUCKETS)`. Each bucket remembers its count and the time of its last
//! write. A bucket leaves the window when its last write is `W` or more in the past, so
//! usage is never forgotten early: every admitted amount is counted for at least `W`,
//! which is what guarantees that no span of length `W` admits more than `max`. Capacity
//! returns bucket by bucket (gradually), and a whole idle window empties it.
//!
//! `lua/lib/windows.lua` stores the same structure in a Redis hash; `tests/lua_parity.rs`
//! checks that the two agree step by step.

use std::collections::VecDeque;

/// Sub-buckets per window: capacity returns in steps of about 1/30 of the window.
pub const SUB_BUCKETS: i64 = 30;

/// Usage saturates here (above any max, exact in a Lua double), so usage reports can never
/// overflow a counter. `lua/lib/counts.lua` has the same bound.
pub const MAX_USED: i64 = 1 << 62;

fn clamp_used(x: i64) -> i64 {
    x.clamp(0, MAX_USED)
}

pub fn granularity_ms(window_ms: i64) -> i64 {
    ((window_ms + SUB_BUCKETS - 1) / SUB_BUCKETS).max(1)
}

/// The admission rule shared by every limit: room must be left *and* the amount must fit.
pub fn admits(used: i64, max: i64, amount: i64) -> bool {
    used < max && used.saturating_add(amount) <= max
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    index: i64,
    count: i64,
    last_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingWindow {
    granularity_ms: i64,
    buckets: VecDeque<Bucket>,
    total: i64,
}

impl SlidingWindow {
    pub fn used(&self) -> i64 {
        self.total
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Drops usage that has left the window. Call before reading or writing at `now_ms`.
    pub fn evict(&mut self, now_ms: i64, window_ms: i64) {
        let granularity = granularity_ms(window_ms);
        if self.granularity_ms != granularity {
            self.regrid(granularity);
        }
        while let Some(front) = self.buckets.front() {
            if front.last_ms > now_ms - window_ms {
                break;
            }
            self.total = clamp_used(self.total - front.count);
            self.buckets.pop_front();
        }
    }

    /// A changed window length changes the bucket width; keep the usage by folding it
    /// into its newest bucket (it then leaves a little later than it would have: safe).
    fn regrid(&mut self, granularity: i64) {
        self.granularity_ms = granularity;
        if let Some(newest) = self.buckets.back().copied() {
            self.buckets.clear();
            self.buckets.push_back(Bucket {
                index: newest.last_ms.div_euclid(granularity),
                count: self.total,
                last_ms: newest.last_ms,
            });
        }
    }

    /// Adds usage at `now_ms` (after `evict`). Never writes behind the newest bucket, so
    /// buckets stay ordered by time.
    pub fn add(&mut self, now_ms: i64, amount: i64) {
        if amount <= 0 {
            return;
        }
        let index = now_ms.div_euclid(self.granularity_ms.max(1));
        match self.buckets.back_mut() {
            Some(back) if back.index >= index => {
                back.count = clamp_used(back.count.saturating_add(amount));
                back.last_ms = back.last_ms.max(now_ms);
            }
            _ => self.buckets.push_back(Bucket {
                index,
                count: amount,
                last_ms: now_ms,
            }),
        }
        self.total = clamp_used(self.total.saturating_add(amount));
    }

    /// Takes back usage, never below zero. With the reservation's time `reserved_at_ms`,
    /// only from the sub-bucket the reservation went into: once that has left the window
    /// the reservation no longer counts and there is nothing to give back (taking it from
    /// newer usage would let more through than the limit). Without it, oldest first, so
    /// what remains is counted as late as possible.
    pub fn refund(&mut self, amount: i64, reserved_at_ms: Option<i64>) {
        if let Some(at) = reserved_at_ms {
            let target = at.div_euclid(self.granularity_ms.max(1));
            if let Some(k) = self.buckets.iter().position(|b| b.index == target) {
                let take = amount.min(self.buckets[k].count);
                self.take(k, take);
            }
            return;
        }
        let mut left = amount;
        while left > 0 {
            let Some(front) = self.buckets.front() else {
                break;
            };
            let take = left.min(front.count);
            left -= take;
            self.take(0, take);
        }
    }

    /// Takes `take` out of bucket `k`; an emptied oldest bucket goes (as in `lua/lib/windows.lua`).
    fn take(&mut self, k: usize, take: i64) {
        self.buckets[k].count -= take;
        self.total = clamp_used(self.total - take);
        if k == 0 && self.buckets[0].count == 0 {
            self.buckets.pop_front();
        }
    }

    /// Time until all current usage has left the window.
    pub fn reset_after_ms(&self, now_ms: i64, window_ms: i64) -> i64 {
        self.buckets
            .back()
            .map_or(0, |b| (b.last_ms + window_ms - now_ms).max(0))
    }

    /// Time until `amount` would be admitted under `max`, assuming nothing else is added.
    /// An amount larger than `max` never fits; then the time until the window is empty.
    pub fn retry_after_ms(&self, now_ms: i64, window_ms: i64, max: i64, amount: i64) -> i64 {
        if admits(self.total, max, amount) {
            return 0;
        }
        let mut remaining = self.total;
        for bucket in &self.buckets {
            remaining -= bucket.count;
            if admits(remaining, max, amount) {
                return (bucket.last_ms + window_ms - now_ms).max(0);
            }
        }
        self.reset_after_ms(now_ms, window_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn admits_until_full_then_frees_after_the_window() {
        let w = 30_000; // 1s buckets
        let mut win = SlidingWindow::default();
        for i in 0..10 {
            win.evict(i * 1000, w);
            assert!(admits(win.used(), 10, 1));
            win.add(i * 1000, 1);
        }
        win.evict(10_000, w);
        assert!(!admits(win.used(), 10, 1));
        // The first request (t=0) leaves at t=30s exactly; the others later, one by one.
        assert_eq!(win.retry_after_ms(10_000, w, 10, 1), 20_000);
        win.evict(29_999, w);
        assert_eq!(win.used(), 10);
        win.evict(30_000, w);
        assert_eq!(win.used(), 9);
        win.evict(39_000, w);
        assert_eq!(win.used(), 0);
        // With 2s buckets, t=0 and t=1s share a bucket that leaves with its last write.
        let mut coarse = SlidingWindow::default();
        for t in [0, 1_000] {
            coarse.evict(t, 60_000);
            coarse.add(t, 1);
        }
        coarse.evict(60_500, 60_000);
        assert_eq!(coarse.used(), 2);
        coarse.evict(61_000, 60_000);
        assert_eq!(coarse.used(), 0);
    }

    #[test]
    fn zero_amount_needs_room_left() {
        assert!(admits(9, 10, 0));
        assert!(!admits(10, 10, 0));
        assert!(!admits(0, 0, 0));
        assert!(!admits(5, 10, 6));
        assert!(admits(5, 10, 5));
    }

    #[test]
    fn refund_takes_oldest_first_and_stops_at_zero() {
        let w = 10_000;
        let mut win = SlidingWindow::default();
        win.evict(0, w);
        win.add(0, 5);
        win.evict(5_000, w);
        win.add(5_000, 5);
        win.refund(7, None);
        assert_eq!(win.used(), 3);
        // The bucket at t=0 is gone, so the rest leaves with the t=5s bucket.
        assert_eq!(win.reset_after_ms(5_000, w), 10_000);
        win.refund(100, None);
        assert_eq!(win.used(), 0);
        assert_eq!(win.bucket_count(), 0);
    }

    #[test]
    fn a_refund_with_its_reservation_time_only_returns_what_that_reservation_holds() {
        let w = 30_000; // 1s buckets
        let mut win = SlidingWindow::default();
        win.evict(0, w);
        win.add(0, 10); // reserved at t=0
        win.evict(20_000, w);
        win.add(20_000, 10); // another request's usage
        // Refund 8 of the t=0 reservation: taken from its own bucket.
        win.refund(8, Some(0));
        assert_eq!(win.used(), 12);
        win.evict(31_000, w);
        assert_eq!(
            win.used(),
            10,
            "the t=0 bucket has left; the newer usage stays"
        );
        // A late refund of a reservation that already left the window gives nothing back.
        win.refund(10, Some(500));
        assert_eq!(win.used(), 10);
        // Never more than the bucket holds.
        win.refund(50, Some(20_400));
        assert_eq!(win.used(), 0);
    }

    #[test]
    fn usage_saturates_instead_of_overflowing() {
        let mut win = SlidingWindow::default();
        win.evict(0, 1_000);
        for _ in 0..2_000 {
            win.add(0, (1 << 53) - 1);
        }
        assert_eq!(win.used(), MAX_USED);
        assert!(!admits(win.used(), (1 << 53) - 1, 0));
    }

    #[test]
    fn changing_the_window_length_keeps_usage() {
        let mut win = SlidingWindow::default();
        for t in 0..20 {
            win.evict(t * 100, 3_000);
            win.add(t * 100, 1);
        }
        win.evict(2_000, 60_000);
        assert_eq!(win.used(), 20);
        assert_eq!(win.bucket_count(), 1);
    }

    #[test]
    fn retry_after_of_an_oversized_amount_is_the_full_reset() {
        let mut win = SlidingWindow::default();
        win.evict(0, 1_000);
        win.add(0, 3);
        assert_eq!(win.retry_after_ms(100, 1_000, 5, 50), 900);
    }

    #[derive(Debug, Clone)]
    struct Step {
        gap_ms: i64,
        amount: i64,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            (0i64..400, 0i64..6).prop_map(|(gap_ms, amount)| Step { gap_ms, amount }),
            1..300,
        )
    }

    proptest! {
        /// The contract: in no span of the window's length is more than `max` admitted.
        #[test]
        fn never_admits_more_than_max_in_any_window(
            window_ms in 1i64..5_000, max in 1i64..40, steps in steps()
        ) {
            let mut win = SlidingWindow::default();
            let mut now = 1_000_000;
            let mut admitted: Vec<(i64, i64)> = Vec::new();
            for step in steps {
                now += step.gap_ms;
                win.evict(now, window_ms);
                if admits(win.used(), max, step.amount) {
                    win.add(now, step.amount);
                    admitted.push((now, step.amount));
                }
                prop_assert!(win.bucket_count() as i64 <= SUB_BUCKETS + 1);
            }
            for &(start, _) in &admitted {
                let in_span: i64 = admitted
                    .iter()
                    .filter(|(t, _)| *t >= start && *t < start + window_ms)
                    .map(|(_, a)| a)
                    .sum();
                prop_assert!(in_span <= max, "{in_span} admitted in [{start}, +{window_ms})");
            }
        }

        /// After a whole idle window the full `max` is available again.
        #[test]
        fn idle_window_restores_full_capacity(window_ms in 1i64..100_000, steps in steps()) {
            let mut win = SlidingWindow::default();
            let mut now = 0;
            for step in steps {
                now += step.gap_ms;
                win.evict(now, window_ms);
                win.add(now, step.amount);
            }
            now += window_ms;
            win.evict(now, window_ms);
            prop_assert_eq!(win.used(), 0);
            prop_assert_eq!(win.bucket_count(), 0);
        }

        /// Waiting `retry_after_ms` is enough for the amount to be admitted.
        #[test]
        fn retry_after_is_sufficient(window_ms in 1i64..5_000, max in 1i64..40, steps in steps(), want in 0i64..40) {
            let mut win = SlidingWindow::default();
            let mut now = 0;
            for step in steps {
                now += step.gap_ms;
                win.evict(now, window_ms);
                if admits(win.used(), max, step.amount) {
                    win.add(now, step.amount);
                }
            }
            let wait = win.retry_after_ms(now, window_ms, max, want);
            let mut later = win.clone();
            later.evict(now + wait, window_ms);
            if want <= max {
                prop_assert!(admits(later.used(), max, want));
            } else {
                prop_assert_eq!(later.used(), 0);
            }
        }
    }
}
