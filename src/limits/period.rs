//! Budget periods: which period a moment falls in.
//!
//! A budget resets on a grid. Unaligned budgets use a grid anchored at the budget's
//! creation. Calendar-aligned budgets use UTC calendar boundaries: whole years for
//! multiples of 365d, whole months for multiples of 30d, and otherwise a grid anchored at
//! Monday 1970-01-05T00:00Z, which puts days on UTC midnight and weeks on Mondays.
//! `lua/lib/periods.lua` implements the same arithmetic; `tests/lua_parity.rs` checks they agree.

use crate::model::duration::{MONTH_MS, YEAR_MS};
use chrono::{DateTime, Datelike, NaiveDate};

/// Monday 1970-01-05T00:00:00Z in Unix milliseconds.
pub const MONDAY_EPOCH_MS: i64 = 4 * 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodGrid {
    /// Fixed-length periods starting at `anchor_ms` (and every `len_ms` before/after it).
    Fixed { anchor_ms: i64, len_ms: i64 },
    /// Groups of `n` UTC calendar months, counted from January of year 0.
    Months { n: i64 },
    /// Groups of `n` UTC calendar years, counted from year 0.
    Years { n: i64 },
}

impl PeriodGrid {
    pub fn new(len_ms: u64, calendar_aligned: bool, created_ms: i64) -> Self {
        let len = len_ms as i64;
        if !calendar_aligned {
            return PeriodGrid::Fixed {
                anchor_ms: created_ms,
                len_ms: len,
            };
        }
        if len_ms.is_multiple_of(YEAR_MS) {
            PeriodGrid::Years {
                n: (len_ms / YEAR_MS) as i64,
            }
        } else if len_ms.is_multiple_of(MONTH_MS) {
            PeriodGrid::Months {
                n: (len_ms / MONTH_MS) as i64,
            }
        } else {
            PeriodGrid::Fixed {
                anchor_ms: MONDAY_EPOCH_MS,
                len_ms: len,
            }
        }
    }

    /// `[start, end)` of the period that contains `now_ms`.
    pub fn bounds(&self, now_ms: i64) -> (i64, i64) {
        match *self {
            PeriodGrid::Fixed { anchor_ms, len_ms } => {
                let k = (now_ms - anchor_ms).div_euclid(len_ms);
                let start = anchor_ms + k * len_ms;
                (start, start + len_ms)
            }
            PeriodGrid::Months { n } => {
                let (y, m) = year_month(now_ms);
                let index = (y * 12 + m).div_euclid(n) * n;
                (month_start_ms(index), month_start_ms(index + n))
            }
            PeriodGrid::Years { n } => {
                let (y, _) = year_month(now_ms);
                let y0 = y.div_euclid(n) * n;
                (month_start_ms(y0 * 12), month_start_ms((y0 + n) * 12))
            }
        }
    }
}

/// A budget's usage in the period it was recorded in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetCounter {
    start_ms: Option<i64>,
    used: i64,
}

impl BudgetCounter {
    /// Moves to the period containing `now_ms` and returns its `[start, end)`. Usage from
    /// an earlier period is dropped; usage from a later-starting one (the grid changed
    /// under an update) is kept.
    pub fn roll(&mut self, grid: &PeriodGrid, now_ms: i64) -> (i64, i64) {
        let (start, end) = grid.bounds(now_ms);
        if self.start_ms.is_some_and(|s| s < start) {
            self.used = 0;
        }
        self.start_ms = Some(start);
        (start, end)
    }

    pub fn used(&self) -> i64 {
        self.used
    }

    /// Adds usage (negative = refund), never below zero.
    pub fn add(&mut self, nanos: i64) {
        self.used = self
            .used
            .saturating_add(nanos)
            .clamp(0, super::window::MAX_USED);
    }
}

/// UTC year and zero-based month of a Unix-millisecond instant.
fn year_month(ms: i64) -> (i64, i64) {
    let t = DateTime::from_timestamp_millis(ms).expect("timestamp in chrono's range");
    (t.year() as i64, t.month0() as i64)
}

/// Unix milliseconds of 00:00Z on the first day of month `index` (= year * 12 + month0).
fn month_start_ms(index: i64) -> i64 {
    let (y, m) = (index.div_euclid(12), index.rem_euclid(12));
    NaiveDate::from_ymd_opt(y as i32, m as u32 + 1, 1)
        .expect("valid month")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::duration::{DAY_MS, HOUR_MS, WEEK_MS};
    use chrono::{TimeZone, Utc, Weekday};
    use proptest::prelude::*;

    fn ms(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn fixed_grid_is_anchored_at_creation() {
        let created = ms(2026, 3, 10, 15, 7);
        let grid = PeriodGrid::new(DAY_MS, false, created);
        assert_eq!(grid.bounds(created), (created, created + DAY_MS as i64));
        let later = created + 3 * DAY_MS as i64 + 5;
        assert_eq!(grid.bounds(later).0, created + 3 * DAY_MS as i64);
        // Before creation (a skewed clock) still lands on the grid.
        assert_eq!(grid.bounds(created - 1).0, created - DAY_MS as i64);
    }

    #[test]
    fn calendar_day_starts_at_utc_midnight() {
        let grid = PeriodGrid::new(DAY_MS, true, ms(2026, 3, 10, 15, 7));
        assert_eq!(
            grid.bounds(ms(2026, 3, 12, 23, 59)),
            (ms(2026, 3, 12, 0, 0), ms(2026, 3, 13, 0, 0))
        );
        let hourly = PeriodGrid::new(HOUR_MS, true, 0);
        assert_eq!(
            hourly.bounds(ms(2026, 3, 12, 7, 42)).0,
            ms(2026, 3, 12, 7, 0)
        );
    }

    #[test]
    fn calendar_week_starts_on_monday() {
        let grid = PeriodGrid::new(WEEK_MS, true, 0);
        // 2026-11-22 is a Sunday; its week began Monday 2026-11-16.
        let (start, end) = grid.bounds(ms(2026, 11, 22, 12, 0));
        assert_eq!(start, ms(2026, 11, 16, 0, 0));
        assert_eq!(end, ms(2026, 11, 23, 0, 0));
        let monday = DateTime::from_timestamp_millis(start).unwrap();
        assert_eq!(monday.weekday(), Weekday::Mon);
    }

    #[test]
    fn calendar_month_handles_month_ends_and_leap_years() {
        let grid = PeriodGrid::new(MONTH_MS, true, 0);
        assert_eq!(
            grid.bounds(ms(2028, 2, 29, 23, 59)),
            (ms(2028, 2, 1, 0, 0), ms(2028, 3, 1, 0, 0))
        );
        assert_eq!(
            grid.bounds(ms(2027, 2, 28, 0, 0)),
            (ms(2027, 2, 1, 0, 0), ms(2027, 3, 1, 0, 0))
        );
        assert_eq!(
            grid.bounds(ms(2026, 12, 31, 23, 59)),
            (ms(2026, 12, 1, 0, 0), ms(2027, 1, 1, 0, 0))
        );
        assert_eq!(grid.bounds(ms(2026, 1, 31, 0, 0)).1, ms(2026, 2, 1, 0, 0));
        let quarterly = PeriodGrid::new(3 * MONTH_MS, true, 0);
        assert_eq!(
            quarterly.bounds(ms(2026, 5, 15, 0, 0)),
            (ms(2026, 4, 1, 0, 0), ms(2026, 7, 1, 0, 0))
        );
    }

    #[test]
    fn calendar_year_spans_leap_years() {
        let grid = PeriodGrid::new(YEAR_MS, true, 0);
        let (start, end) = grid.bounds(ms(2028, 7, 1, 0, 0));
        assert_eq!((start, end), (ms(2028, 1, 1, 0, 0), ms(2029, 1, 1, 0, 0)));
        assert_eq!(end - start, 366 * DAY_MS as i64);
    }

    #[test]
    fn budget_counter_resets_in_a_new_period_only() {
        let grid = PeriodGrid::new(DAY_MS, false, 0);
        let mut b = BudgetCounter::default();
        b.roll(&grid, 10);
        b.add(500);
        b.add(-200);
        assert_eq!(b.used(), 300);
        b.add(-1_000);
        assert_eq!(b.used(), 0);
        b.add(700);
        assert_eq!(b.roll(&grid, DAY_MS as i64 - 1), (0, DAY_MS as i64));
        assert_eq!(b.used(), 700);
        b.roll(&grid, DAY_MS as i64);
        assert_eq!(b.used(), 0);
    }

    proptest! {
        #[test]
        fn now_is_inside_its_period(
            now in 0i64..4_102_444_800_000,
            created in 0i64..4_102_444_800_000,
            len in 1u64..(3 * YEAR_MS),
            aligned: bool,
        ) {
            let grid = PeriodGrid::new(len, aligned, created);
            let (start, end) = grid.bounds(now);
            prop_assert!(start <= now && now < end, "{start} <= {now} < {end}");
            // The next period starts where this one ends.
            prop_assert_eq!(grid.bounds(end).0, end);
            // Fixed grids keep their length exactly.
            if let PeriodGrid::Fixed { len_ms, .. } = grid {
                prop_assert_eq!(end - start, len_ms);
            }
        }

        #[test]
        fn aligned_months_start_on_the_first(now in 0i64..4_102_444_800_000, n in 1u64..13) {
            let (start, _) = PeriodGrid::new(n * MONTH_MS, true, 0).bounds(now);
            let t = DateTime::from_timestamp_millis(start).unwrap();
            prop_assert_eq!((t.day(), t.timestamp_millis() % 86_400_000), (1, 0));
        }
    }
}
