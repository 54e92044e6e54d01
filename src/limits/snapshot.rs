//! The configs a replica enforces: an immutable snapshot, swapped whole on every change.

use super::compiled::CompiledConfig;
use super::matching::{ConfigIndex, MatchKey};
use crate::model::ModelConfig;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug)]
pub struct Snapshot {
    /// The store's config version this snapshot was loaded at.
    pub version: u64,
    /// In list order: `created_at`, then `id`.
    pub configs: Vec<Arc<CompiledConfig>>,
    pub loaded_at: Instant,
    by_id: HashMap<String, usize>,
    index: ConfigIndex,
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot::build(0, Vec::new())
    }

    /// Configs that fail to compile (hand-edited store data) are logged and skipped.
    pub fn build(version: u64, configs: Vec<ModelConfig>) -> Self {
        let mut compiled: Vec<Arc<CompiledConfig>> = configs
            .into_iter()
            .filter_map(|c| match CompiledConfig::compile(c) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    tracing::error!(error = %e, "skipping invalid config from the store");
                    None
                }
            })
            .collect();
        compiled.sort_by(|a, b| a.config.list_order().cmp(&b.config.list_order()));
        let by_id = compiled
            .iter()
            .enumerate()
            .map(|(i, c)| (c.config.id.clone(), i))
            .collect();
        let index = ConfigIndex::build(&compiled);
        Snapshot {
            version,
            configs: compiled,
            loaded_at: Instant::now(),
            by_id,
            index,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<CompiledConfig>> {
        self.by_id.get(id).map(|&i| &self.configs[i])
    }

    pub fn matching(&self, key: &MatchKey<'_>) -> Vec<&Arc<CompiledConfig>> {
        self.index
            .matching(&self.configs, key)
            .into_iter()
            .map(|i| &self.configs[i])
            .collect()
    }
}
