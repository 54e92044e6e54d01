//! Which limit an answer describes: of the limits that refused, the one that blocks
//! longest; when none refused, the one with the smallest fraction left. The headers of
//! `/v1/check`, the reason and Envoy's per-descriptor statuses all come from here.

use crate::limits::LimitSpec;
use crate::store::LimitOutcome;

/// Which limit the headers describe: when denied, the one that blocks longest; when
/// allowed, the one with the smallest fraction left.
pub fn most_restrictive(limits: &[(&LimitSpec, LimitOutcome)], allowed: bool) -> Option<usize> {
    pick(limits, 0..limits.len(), allowed)
}

/// `most_restrictive` among the limits at `positions` only: the refusing ones if any
/// refused, else the one with the smallest fraction left. A position into `limits`.
pub fn most_restrictive_among(
    limits: &[(&LimitSpec, LimitOutcome)],
    positions: &[usize],
) -> Option<usize> {
    most_restrictive_of(limits, positions.iter().copied())
}

/// `most_restrictive_among` over any walk of positions, with nothing gathered (a check
/// answer asks this three times).
pub fn most_restrictive_of(
    limits: &[(&LimitSpec, LimitOutcome)],
    positions: impl Iterator<Item = usize> + Clone,
) -> Option<usize> {
    let refused = positions.clone().any(|i| !limits[i].1.admitted);
    pick(limits, positions, !refused)
}

/// Ties go to the first in `positions`' order.
fn pick(
    limits: &[(&LimitSpec, LimitOutcome)],
    positions: impl Iterator<Item = usize>,
    allowed: bool,
) -> Option<usize> {
    if allowed {
        let frac = |i: usize| {
            let (s, o) = limits[i];
            (s.max - o.used).max(0) as f64 / s.max.max(1) as f64
        };
        positions.min_by(|&a, &b| frac(a).total_cmp(&frac(b)))
    } else {
        positions
            .enumerate()
            .filter(|&(_, i)| !limits[i].1.admitted)
            .max_by_key(|&(nth, i)| (limits[i].1.retry_after_ms, std::cmp::Reverse(nth)))
            .map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitKind;
    use proptest::prelude::*;

    /// The definition: gather the limits at `positions`, then pick among them.
    fn by_subset(limits: &[(&LimitSpec, LimitOutcome)], positions: &[usize]) -> Option<usize> {
        let subset: Vec<_> = positions.iter().map(|&i| limits[i]).collect();
        let refused = subset.iter().any(|(_, o)| !o.admitted);
        most_restrictive(&subset, !refused).map(|i| positions[i])
    }

    proptest! {
        #[test]
        fn picks_as_the_gathered_subset_does(
            limits in prop::collection::vec((1i64..5, 0i64..6, any::<bool>(), 0i64..3), 1..8),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let specs: Vec<LimitSpec> = limits
                .iter()
                .map(|&(max, ..)| LimitSpec::window(LimitKind::Tokens, max, 60_000))
                .collect();
            let pairs: Vec<(&LimitSpec, LimitOutcome)> = specs
                .iter()
                .zip(&limits)
                .map(|(s, &(_, used, admitted, retry))| {
                    (s, LimitOutcome { admitted, used, reset_after_ms: 1, retry_after_ms: retry })
                })
                .collect();
            // Any positions, in any order, repeats allowed (Envoy's keys list theirs so).
            let positions: Vec<usize> = picks.iter().map(|p| p.index(pairs.len())).collect();
            prop_assert_eq!(most_restrictive_among(&pairs, &positions), by_subset(&pairs, &positions));
        }
    }
}
