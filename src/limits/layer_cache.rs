//! Forms of a compiled config that outer layers derive from it once and keep with it:
//! the Redis scripts' packed limits (`store::redis::packed_limits`) and the fixed fields
//! of a check answer (`api::check::answer`). Each is a pure function of the config, too
//! costly to redo per check (the answer's JSON was 11% of tollgate's CPU).
//!
//! `limits` only holds the slots: each layer owns its slot's type and format, so no wire
//! format lives here and nothing here imports an outer layer. A slot is filled at the
//! first use (configs never checked, most of a million, cost nothing), shared by every
//! snapshot that keeps the compiled config, and dropped with it.

use std::any::Any;
use std::fmt;
use std::sync::OnceLock;

/// One slot per layer that derives a form of the config. Part of what a compiled config
/// builds at its first use (`CompiledConfig::cache`): a config never checked has none.
#[derive(Debug, Default)]
pub struct LayerCache {
    store: CacheSlot,
    answer: CacheSlot,
}

/// A copy starts empty, as each slot's copy does.
impl Clone for LayerCache {
    fn clone(&self) -> Self {
        LayerCache::default()
    }
}

impl LayerCache {
    /// The store's encoding of the limits (`store::redis`).
    pub fn store(&self) -> &CacheSlot {
        &self.store
    }

    /// The check answer's encoding of the limits (`api::check`).
    pub fn answer(&self) -> &CacheSlot {
        &self.answer
    }
}

/// A value of one type, computed at most once. The type is the owning layer's: a
/// private type of that layer, so no other code can read or fill the slot.
#[derive(Default)]
pub struct CacheSlot(OnceLock<Box<dyn Any + Send + Sync>>);

impl CacheSlot {
    /// The value, computed by `init` the first time. Only one type may ever be kept in
    /// a slot; asking for another is a programming error.
    #[inline]
    pub fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> &T {
        self.0
            .get_or_init(|| Box::new(init()))
            .downcast_ref()
            .expect("a cache slot keeps one type, its layer's")
    }
}

/// A copy starts empty: what it held is derived again from the same config on demand.
impl Clone for CacheSlot {
    fn clone(&self) -> Self {
        CacheSlot::default()
    }
}

impl fmt::Debug for CacheSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.0.get().is_some() {
            "filled"
        } else {
            "empty"
        };
        f.debug_tuple("CacheSlot").field(&state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_and_copies_start_empty() {
        let slot = CacheSlot::default();
        let mut calls = 0;
        assert_eq!(
            *slot.get_or_init(|| {
                calls += 1;
                7u32
            }),
            7
        );
        assert_eq!(*slot.get_or_init(|| 8u32), 7, "kept, not recomputed");
        assert_eq!(calls, 1);
        assert_eq!(format!("{slot:?}"), "CacheSlot(\"filled\")");
        assert_eq!(*slot.clone().get_or_init(|| 9u32), 9);
    }
}
