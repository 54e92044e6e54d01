//! A compiled config as its own key in the snapshot's ordered maps: by id, and in list
//! order. The maps hold no copy of the id (a million configs would hold a million
//! more), only its first 8 bytes beside the pointer, so that building a map of a
//! million configs settles almost every comparison without reading the config (two
//! cache misses each, about 20 comparisons per insert: most of a full load's time).

use super::compiled::CompiledConfig;
use chrono::{DateTime, Utc};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::sync::Arc;

/// The first 8 bytes of `id`, big-endian, zero-padded: ordered as the ids are wherever
/// they differ (a shorter id pads with 0, which is below any byte but NUL, and ties
/// are settled by the whole id).
fn id_prefix(id: &str) -> u64 {
    let mut head = [0u8; 8];
    let n = id.len().min(8);
    head[..n].copy_from_slice(&id.as_bytes()[..n]);
    u64::from_be_bytes(head)
}

/// By id, as `str` orders (looked up by `&str`: `Borrow`).
#[derive(Debug, Clone)]
pub(super) struct ById {
    prefix: u64,
    config: Arc<CompiledConfig>,
}

impl ById {
    pub fn of(config: Arc<CompiledConfig>) -> Self {
        ById {
            prefix: id_prefix(&config.config.id),
            config,
        }
    }

    pub fn config(&self) -> &Arc<CompiledConfig> {
        &self.config
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.config.config.id.cmp(&other.config.config.id))
    }
}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ById {}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.config.config.id
    }
}

/// In list order: `created_at`, then `id`.
#[derive(Debug, Clone)]
pub(super) struct InListOrder {
    created_at: DateTime<Utc>,
    prefix: u64,
    config: Arc<CompiledConfig>,
}

impl InListOrder {
    pub fn of(config: &Arc<CompiledConfig>) -> Self {
        InListOrder {
            created_at: config.config.created_at,
            prefix: id_prefix(&config.config.id),
            config: config.clone(),
        }
    }

    pub fn config(&self) -> &Arc<CompiledConfig> {
        &self.config
    }
}

impl Ord for InListOrder {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.created_at, self.prefix)
            .cmp(&(other.created_at, other.prefix))
            .then_with(|| self.config.config.id.cmp(&other.config.config.id))
    }
}

impl PartialOrd for InListOrder {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for InListOrder {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InListOrder {}

#[cfg(test)]
mod tests {
    use super::id_prefix;
    use proptest::prelude::*;

    proptest! {
        /// Comparing prefixes first never contradicts comparing the ids.
        #[test]
        fn prefixes_order_as_the_ids_do(a in "[\\x00-\\x7f]{0,12}", b in "[\\x00-\\x7f]{0,12}") {
            let by_prefix = id_prefix(&a).cmp(&id_prefix(&b)).then_with(|| a.cmp(&b));
            prop_assert_eq!(by_prefix, a.cmp(&b));
        }
    }
}
