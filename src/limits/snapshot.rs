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
        let compiled = configs.into_iter().filter_map(compile_or_log).collect();
        Snapshot::index(version, compiled)
    }

    /// The store's configs at `version`, reusing this snapshot's compiled configs whose
    /// revision did not change.
    pub fn reload(&self, version: u64, configs: Vec<ModelConfig>) -> Self {
        let compiled = configs
            .into_iter()
            .filter_map(|c| match self.get(&c.id) {
                Some(known) if known.config.revision == c.revision && known.config == c => {
                    Some(known.clone())
                }
                _ => compile_or_log(c),
            })
            .collect();
        Snapshot::index(version, compiled)
    }

    /// This snapshot with one config upserted (`Some`) or removed (`None`), at `version`.
    /// The other configs are shared, not recompiled: a write costs O(n) pointer copies
    /// and one index rebuild, not n compilations.
    pub fn with_change(&self, version: u64, id: &str, upsert: Option<ModelConfig>) -> Self {
        let mut compiled: Vec<Arc<CompiledConfig>> = self
            .configs
            .iter()
            .filter(|c| c.config.id != id)
            .cloned()
            .collect();
        compiled.extend(upsert.and_then(compile_or_log));
        Snapshot::index(version, compiled)
    }

    fn index(version: u64, mut compiled: Vec<Arc<CompiledConfig>>) -> Self {
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

fn compile_or_log(config: ModelConfig) -> Option<Arc<CompiledConfig>> {
    match CompiledConfig::compile(config) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::error!(error = %e, "skipping invalid config from the store");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::create_config;
    use serde_json::json;

    fn config(model: &str) -> ModelConfig {
        create_config(
            serde_json::from_value(json!({"model_name": model})).unwrap(),
            chrono::Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn with_change_upserts_removes_and_shares_the_rest() {
        let (a, b) = (config("a"), config("b"));
        let base = Snapshot::build(1, vec![a.clone(), b.clone()]);
        let c = config("c");
        let added = base.with_change(2, &c.id, Some(c.clone()));
        assert_eq!(added.version, 2);
        assert_eq!(added.configs.len(), 3);
        assert!(
            Arc::ptr_eq(added.get(&a.id).unwrap(), base.get(&a.id).unwrap()),
            "unchanged configs are shared"
        );
        let mut renamed = b.clone();
        renamed.model_name = "b2".into();
        let updated = added.with_change(3, &b.id, Some(renamed));
        assert_eq!(updated.get(&b.id).unwrap().config.model_name, "b2");
        assert_eq!(
            updated
                .matching(&MatchKey {
                    model: "b",
                    ..Default::default()
                })
                .len(),
            0
        );
        assert_eq!(
            updated
                .matching(&MatchKey {
                    model: "b2",
                    ..Default::default()
                })
                .len(),
            1
        );
        let reloaded = updated.reload(
            5,
            updated.configs.iter().map(|c| c.config.clone()).collect(),
        );
        assert!(
            Arc::ptr_eq(reloaded.get(&a.id).unwrap(), updated.get(&a.id).unwrap()),
            "unchanged configs are reused"
        );
        let removed = updated.with_change(4, &a.id, None);
        assert!(removed.get(&a.id).is_none());
        assert_eq!(removed.configs.len(), 2);
        let ids: Vec<_> = removed
            .configs
            .iter()
            .map(|c| c.config.id.clone())
            .collect();
        let mut sorted = removed.configs.clone();
        sorted.sort_by(|x, y| x.config.list_order().cmp(&y.config.list_order()));
        assert_eq!(
            ids,
            sorted
                .iter()
                .map(|c| c.config.id.clone())
                .collect::<Vec<_>>()
        );
    }
}
