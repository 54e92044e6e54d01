//! The usage of each limit as this replica last saw it (in a check answer or a usage
//! read): what `from_memory=true` lists show without a store call, lagging the store by
//! at most the time since this replica last touched the limit.

use super::compiled::LimitSpec;
use std::sync::atomic::{AtomicI64, Ordering};

/// Per limit: the count seen and when (Unix ms; 0 = never). Part of what a compiled
/// config builds at its first use (`CompiledConfig::seen`); a config never checked has
/// none (`CompiledConfig::last_seen`).
#[derive(Debug)]
pub struct SeenUsage(Box<[[AtomicI64; 2]]>);

impl Clone for SeenUsage {
    fn clone(&self) -> Self {
        let copy = SeenUsage::new(self.0.len());
        for (i, [used, at]) in self.0.iter().enumerate() {
            copy.record(i, used.load(Ordering::Relaxed), at.load(Ordering::Relaxed));
        }
        copy
    }
}

impl SeenUsage {
    pub fn new(limits: usize) -> Self {
        SeenUsage((0..limits).map(|_| Default::default()).collect())
    }

    fn get(&self, i: usize) -> Option<&[AtomicI64; 2]> {
        self.0.get(i)
    }

    /// Limit `i` had `used` at `at_ms` (the store's clock).
    pub fn record(&self, i: usize, used: i64, at_ms: i64) {
        let Some([u, at]) = self.get(i) else { return };
        u.store(used, Ordering::Relaxed);
        at.store(at_ms, Ordering::Relaxed);
    }

    /// Limit `i` as last seen: (used, when in Unix ms), or None if never seen.
    pub fn last(&self, i: usize) -> Option<(i64, i64)> {
        let [u, at] = self.get(i)?;
        let at = at.load(Ordering::Relaxed);
        (at != 0).then(|| (u.load(Ordering::Relaxed), at))
    }

    /// (used, start of its window or period) of each of `limits`, as last seen; a limit
    /// never seen shows 0 in the window or period of `now_ms`.
    pub fn usage(&self, limits: &[LimitSpec], now_ms: i64) -> Vec<(i64, i64)> {
        limits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (used, at) = self.get(i).map_or((0, 0), |[u, at]| {
                    (u.load(Ordering::Relaxed), at.load(Ordering::Relaxed))
                });
                let (used, at) = if at == 0 { (0, now_ms) } else { (used, at) };
                let start = match l.grid() {
                    Some(grid) => grid.bounds(at).0,
                    None => at - l.len_ms,
                };
                (used, start)
            })
            .collect()
    }
}
