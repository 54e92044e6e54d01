//! The configs this replica checked through the store lately: the ones whose usage it
//! reads back periodically, so that its share reflects what other replicas consumed. A
//! limit only other replicas use needs no share here; a config checked once in a while
//! drops out a minute after its last check.

use crate::limits::CompiledConfig;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

/// A config drops out this long after its last check.
pub const KEEP_MS: i64 = 60_000;

/// At most this many configs are kept fresh (the most recently checked stay).
const CAPACITY: usize = 20_000;

/// Sharded, so that concurrent checks rarely wait on one another's lock.
const SHARDS: usize = 16;

pub struct Recent {
    shards: [Mutex<HashMap<String, i64>>; SHARDS],
    hasher: RandomState,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: RandomState::new(),
        }
    }
}

impl Recent {
    pub fn touch(&self, configs: &[Arc<CompiledConfig>]) {
        let now = chrono::Utc::now().timestamp_millis();
        for c in configs {
            let id = c.config.id.as_str();
            let mut shard = self.shards[self.hasher.hash_one(id) as usize % SHARDS].lock();
            if let Some(at) = shard.get_mut(id) {
                *at = now;
            } else if shard.len() < CAPACITY / SHARDS {
                shard.insert(id.to_string(), now);
            }
        }
    }

    /// The ids checked within `KEEP_MS`; forgets the others.
    pub fn current(&self) -> Vec<String> {
        let since = chrono::Utc::now().timestamp_millis() - KEEP_MS;
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock();
            shard.retain(|_, at| *at >= since);
            out.extend(shard.keys().cloned());
        }
        out
    }
}
