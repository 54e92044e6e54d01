//! The order to fill an `imbl` B-tree in from sorted keys, so that a full load builds
//! trees as compact as they can be, and fast.
//!
//! Inserted at random, a B-tree misses the cache on every insert and its leaves end
//! about 70 % full. Inserted in order, it touches one path at a time, but every leaf
//! splits at its median and is never touched again: half full (`imbl`'s leaves are
//! fixed chunks of 16, so half of each is paid for and empty). Inserting the keys at
//! even positions first, in order, then those at odd positions, in order, puts each odd
//! key into the room left beside its neighbours: the leaves end full, and each pass
//! still touches one path at a time.

use super::compiled::CompiledConfig;
use super::config_keys::{ById, InListOrder};
use super::matching::ConfigIndex;
use imbl::OrdSet;
use std::sync::Arc;

/// A full load's id map, list order and index of `compiled` (the last config of an id
/// wins): sorted by id first, then each tree built from sorted keys in `filling_order`,
/// each on a thread of its own.
pub(super) fn full_load(
    compiled: Vec<Arc<CompiledConfig>>,
) -> (OrdSet<ById>, OrdSet<InListOrder>, ConfigIndex) {
    let mut by_id: Vec<ById> = compiled.into_iter().rev().map(ById::of).collect();
    // Stable, over the reversed list: of equal ids the last one read comes first.
    by_id.sort();
    by_id.dedup_by(|later, first| later == first);
    let configs: Vec<&Arc<CompiledConfig>> = by_id.iter().map(ById::config).collect();
    std::thread::scope(|s| {
        let ids = s.spawn(|| filling_order(&by_id).collect());
        let ordered = s.spawn(|| {
            let mut keys: Vec<InListOrder> = configs.iter().map(|c| InListOrder::of(c)).collect();
            keys.sort_unstable();
            filling_order(&keys).collect()
        });
        let index = ConfigIndex::of_all(configs.iter().copied());
        (
            ids.join().expect("building the id map"),
            ordered.join().expect("building the list order"),
            index,
        )
    })
}

/// `sorted` (ascending, distinct) in the order that fills a B-tree's leaves. Clones
/// rather than moves: the keys are an id or a hash and a pointer, and a second copy of
/// a million of them would be held through the build.
pub fn filling_order<T: Clone>(sorted: &[T]) -> impl Iterator<Item = T> + '_ {
    let evens = sorted.iter().step_by(2);
    let odds = sorted.iter().skip(1).step_by(2);
    evens.chain(odds).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_key_once_evens_then_odds(n in 0usize..200) {
            let keys: Vec<usize> = (0..n).collect();
            let order: Vec<usize> = filling_order(&keys).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            let half = n.div_ceil(2);
            prop_assert!(order[..half].iter().all(|i| i % 2 == 0));
            prop_assert!(order[..half].windows(2).all(|w| w[0] < w[1]));
            prop_assert!(order[half..].windows(2).all(|w| w[0] < w[1]));
        }
    }
}
