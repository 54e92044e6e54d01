//! Threshold events: which of a limit's alert thresholds a change of its usage reached,
//! at most once per budget period, or per window length for a window.
//!
//! Each limit remembers the highest threshold it fired and when (`Fired`). A threshold
//! fires when usage reaches `t × max` while the remembered level is below `t`; several
//! fire at once when one check jumps over them. A budget forgets its level with its
//! period; a window one window length after the last firing, so a window that slides
//! back below and up again fires again no sooner than that. Nothing else lowers a level
//! (not a refund, not a give-back), so no threshold fires twice. Deciding this where the
//! counters live (the Lua scripts, or the embedded store under its lock) makes exactly
//! one replica of a fleet see each crossing. `lua/lib/alerts.lua` does the same arithmetic in
//! doubles; `tests/lua_parity.rs` keeps them equal.

/// The highest threshold a limit fired (a fraction of its max; 0: none) and when (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fired {
    pub level: f64,
    pub at_ms: i64,
}

impl Fired {
    /// A window's level, forgotten one window length after it was set.
    pub fn in_window(self, now_ms: i64, len_ms: i64) -> Fired {
        if self.level > 0.0 && now_ms - self.at_ms >= len_ms {
            Fired::default()
        } else {
            self
        }
    }
}

/// Whether usage `used` of `max` has reached threshold `t` (in doubles, as the scripts).
pub fn at_or_above(used: i64, max: i64, t: f64) -> bool {
    used as f64 >= t * max as f64
}

/// The thresholds (indexes into `thresholds`, ascending) that `used` reaches above
/// `fired`, and the level after them: `fired` unchanged when none fires, else the
/// highest fired at `now_ms`.
pub fn reached(
    thresholds: &[f64],
    fired: Fired,
    used: i64,
    max: i64,
    now_ms: i64,
) -> (Vec<usize>, Fired) {
    let hits: Vec<usize> = thresholds
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t > fired.level && at_or_above(used, max, t))
        .map(|(i, _)| i)
        .collect();
    match hits.last() {
        Some(&top) => (
            hits.clone(),
            Fired {
                level: thresholds[top],
                at_ms: now_ms,
            },
        ),
        None => (hits, fired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: &[f64] = &[0.5, 0.8, 1.0];

    #[test]
    fn fires_each_threshold_once_as_usage_rises() {
        let f = Fired::default();
        let (hits, f) = reached(T, f, 40, 100, 1);
        assert!(hits.is_empty() && f == Fired::default());
        let (hits, f) = reached(T, f, 85, 100, 2);
        assert_eq!(hits, vec![0, 1], "jumped over two");
        assert_eq!(
            f,
            Fired {
                level: 0.8,
                at_ms: 2
            }
        );
        let (hits, f) = reached(T, f, 90, 100, 3);
        assert!(hits.is_empty(), "0.8 already fired");
        let (hits, f) = reached(T, f, 100, 100, 4);
        assert_eq!((hits, f.level), (vec![2], 1.0));
    }

    #[test]
    fn a_window_forgets_one_length_after() {
        let f = Fired {
            level: 0.8,
            at_ms: 1_000,
        };
        assert_eq!(f.in_window(1_999, 1_000), f);
        assert_eq!(f.in_window(2_000, 1_000), Fired::default());
    }

    proptest! {
        /// Over any usage path within one period, each threshold fires at most once, and
        /// every threshold that usage reached has fired.
        #[test]
        fn at_most_once_and_never_missed(steps in proptest::collection::vec(0i64..150, 1..40)) {
            let mut f = Fired::default();
            let mut fired = [0usize; 3];
            let mut peak = 0;
            for (i, used) in steps.into_iter().enumerate() {
                let (hits, next) = reached(T, f, used, 100, i as i64);
                for h in hits { fired[h] += 1; }
                f = next;
                peak = peak.max(used);
            }
            for (i, &t) in T.iter().enumerate() {
                prop_assert!(fired[i] <= 1);
                prop_assert_eq!(fired[i] == 1, at_or_above(peak, 100, t));
            }
        }
    }
}
