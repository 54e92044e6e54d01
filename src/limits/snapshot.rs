//! The configs a replica enforces: an immutable snapshot, swapped whole on every change.
//!
//! Built from persistent maps (`imbl`), so the snapshot after one config change shares
//! everything else with the one before: applying a change costs O(log n), and a replica
//! holding a million configs applies another replica's write without copying them.

use super::compiled::CompiledConfig;
use super::config_keys::{ById, InListOrder};
use super::filling::full_load;
use super::matching::{ConfigIndex, MatchKey};
use super::policy::Policy;
use crate::model::{Id, ModelConfig};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The store's config version this snapshot is current to.
    pub version: u64,
    /// The store's data epoch this snapshot belongs to (None: the store has none yet).
    pub epoch: Option<String>,
    /// Keys only: a million configs cost a million entries, not a million more ids. A
    /// B-tree: about 35 bytes per entry where `imbl`'s hash trie takes about 130.
    by_id: imbl::OrdSet<ById>,
    ordered: imbl::OrdSet<InListOrder>,
    /// What checks match, and the configs of each scope id (the list filter operators
    /// use most pages from there).
    index: ConfigIndex,
    /// How this replica applies its configs (every snapshot derived from this one keeps it).
    policy: Arc<Policy>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Self::empty_for(Arc::new(Policy::default()))
    }

    /// No configs yet; those to come are compiled with `policy`.
    pub fn empty_for(policy: Arc<Policy>) -> Self {
        Snapshot {
            version: 0,
            epoch: None,
            by_id: imbl::OrdSet::new(),
            ordered: imbl::OrdSet::new(),
            index: ConfigIndex::default(),
            policy,
        }
    }

    /// `rebuilt` with the default policy.
    pub fn build(version: u64, configs: Vec<ModelConfig>) -> Self {
        Snapshot::empty().rebuilt(version, configs)
    }

    /// A snapshot of `configs` alone at `version`, under this one's policy. Configs that
    /// fail to compile (hand-edited store data) are logged and skipped. Compiled on
    /// every CPU.
    pub fn rebuilt(&self, version: u64, configs: Vec<ModelConfig>) -> Self {
        let mut snapshot = Snapshot::empty_for(self.policy.clone());
        snapshot.version = version;
        let policy = &self.policy;
        snapshot.put_all(crate::parallel::map(configs, |c| compile_or_log(c, policy)));
        snapshot
    }

    /// No configs, under this one's policy.
    pub fn emptied(&self) -> Self {
        Snapshot::empty_for(self.policy.clone())
    }

    /// A full reload of `configs` at `epoch` and `version`. Configs that `previous` holds
    /// unchanged in the same epoch keep their compiled form, and so the usage this
    /// replica saw of them (`from_memory` lists, the usage gauges of `/metrics`).
    pub fn reload(
        epoch: Option<String>,
        version: u64,
        configs: Vec<ModelConfig>,
        previous: &Snapshot,
    ) -> Self {
        let compiled = crate::parallel::map(configs, |c| previous.reused_or_compiled(&epoch, c));
        Snapshot::reloaded(epoch, version, compiled, previous)
    }

    /// `reload` of configs compiled as they were read (`reloader`): a full load compiles
    /// each page as it parses it, so a million parsed configs are never held at once.
    pub fn reloaded(
        epoch: Option<String>,
        version: u64,
        compiled: Vec<Result<Arc<CompiledConfig>, Id>>,
        previous: &Snapshot,
    ) -> Self {
        let mut snapshot = Snapshot::empty_for(previous.policy.clone());
        snapshot.version = version;
        snapshot.epoch = epoch;
        snapshot.put_all(compiled);
        snapshot
    }

    /// What `reload` at `epoch` makes of each config, to run where they are parsed.
    pub fn reloader(
        epoch: Option<String>,
        previous: Arc<Snapshot>,
    ) -> impl Fn(ModelConfig) -> Result<Arc<CompiledConfig>, Id> + Send + Sync + 'static {
        move |c| previous.reused_or_compiled(&epoch, c)
    }

    /// The compiled form this snapshot holds of `c` if it is unchanged in `epoch` (so the
    /// usage this replica saw of it is kept), else `c` compiled.
    fn reused_or_compiled(
        &self,
        epoch: &Option<String>,
        c: ModelConfig,
    ) -> Result<Arc<CompiledConfig>, Id> {
        match self.get(&c.id) {
            Some(known) if self.epoch == *epoch && known.config == c => Ok(known.clone()),
            _ => compile_or_log(c, &self.policy),
        }
    }

    /// Each config in order, replacing any of the same id; a config that failed to
    /// compile (`Err(id)`) removes its id, as `upsert` does. Into an empty snapshot, as a
    /// full load does, all at once (`filling::full_load`) unless some failed (hand-edited
    /// store data: rare).
    fn put_all(&mut self, compiled: Vec<Result<Arc<CompiledConfig>, Id>>) {
        if self.is_empty() && compiled.iter().all(Result::is_ok) {
            let trees = full_load(compiled.into_iter().flatten().collect());
            (self.by_id, self.ordered, self.index) = trees;
            return;
        }
        for c in compiled {
            match c {
                Ok(c) => {
                    self.remove(&c.config.id);
                    self.insert(c);
                }
                Err(id) => self.remove(&id),
            }
        }
    }

    /// The same configs under another epoch and version (after a re-seed or adoption).
    pub fn at(&self, epoch: Option<String>, version: u64) -> Self {
        let mut next = self.clone();
        next.epoch = epoch;
        next.version = version;
        next
    }

    /// This snapshot with one config upserted (`Some`) or removed (`None`), at `version`.
    pub fn with_change(&self, version: u64, id: &str, upsert: Option<ModelConfig>) -> Self {
        self.with_changes(version, [(id.to_string(), upsert)])
    }

    /// This snapshot with each change applied in order, at `version`. A config whose
    /// content did not change keeps its compiled form.
    pub fn with_changes(
        &self,
        version: u64,
        changes: impl IntoIterator<Item = (String, Option<ModelConfig>)>,
    ) -> Self {
        let mut next = self.clone();
        next.version = version;
        for (id, change) in changes {
            match change {
                Some(c) if next.get(&id).is_some_and(|known| known.config == c) => {}
                Some(c) => next.upsert(c),
                None => next.remove(&id),
            }
        }
        next
    }

    fn upsert(&mut self, config: ModelConfig) {
        self.remove(&config.id);
        if let Ok(compiled) = compile_or_log(config, &self.policy) {
            self.insert(compiled);
        }
    }

    /// Adds a compiled config whose id is not in the snapshot.
    fn insert(&mut self, compiled: Arc<CompiledConfig>) {
        self.index.insert(&compiled);
        self.ordered.insert(InListOrder::of(&compiled));
        self.by_id.insert(ById::of(compiled));
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            let old = old.config();
            self.ordered.remove(&InListOrder::of(old));
            self.index.remove(old);
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<CompiledConfig>> {
        self.by_id.get(id).map(ById::config)
    }

    /// Every config, newest first (`created_at` descending, then `id` descending), as
    /// Bifrost and its UI list them.
    pub fn newest_first(&self) -> impl Iterator<Item = &Arc<CompiledConfig>> {
        self.ordered.iter().rev().map(InListOrder::config)
    }

    /// Every config as stored, oldest first.
    pub fn configs(&self) -> impl Iterator<Item = &ModelConfig> {
        self.ordered.iter().map(|c| &c.config().config)
    }

    /// The configs whose `scope_id` is `scope_id`, newest first: O(their number).
    pub fn with_scope_id<'a>(
        &'a self,
        scope_id: &'a str,
    ) -> impl Iterator<Item = &'a Arc<CompiledConfig>> + 'a {
        self.index.with_scope_id(scope_id).rev()
    }

    pub fn matching(&self, key: &MatchKey<'_>) -> Vec<&Arc<CompiledConfig>> {
        self.index.matching(key)
    }
}

/// The compiled config, or (logged) the id of one that does not compile.
fn compile_or_log(config: ModelConfig, policy: &Policy) -> Result<Arc<CompiledConfig>, Id> {
    let id = config.id.clone();
    CompiledConfig::compile_for(config, policy)
        .map(Arc::new)
        .map_err(|e| {
            tracing::error!(error = %e, "skipping invalid config from the store");
            id
        })
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

    fn count(s: &Snapshot, model: &str) -> usize {
        s.matching(&MatchKey {
            model,
            ..Default::default()
        })
        .len()
    }

    #[test]
    fn with_change_upserts_removes_and_shares_the_rest() {
        let (a, b) = (config("a"), config("b"));
        let base = Snapshot::build(1, vec![a.clone(), b.clone()]);
        let c = config("c");
        let added = base.with_change(2, &c.id, Some(c.clone()));
        assert_eq!((added.version, added.len(), base.len()), (2, 3, 2));
        assert!(
            Arc::ptr_eq(added.get(&a.id).unwrap(), base.get(&a.id).unwrap()),
            "unchanged configs are shared"
        );
        let mut renamed = b.clone();
        renamed.model_name = "b2".into();
        let updated = added.with_change(3, &b.id, Some(renamed));
        assert_eq!(updated.get(&b.id).unwrap().config.model_name, "b2");
        assert_eq!((count(&updated, "b"), count(&updated, "b2")), (0, 1));
        assert_eq!(count(&added, "b"), 1, "the older snapshot is untouched");
        let same = updated.with_changes(4, [(a.id.to_string(), Some(a.clone()))]);
        assert!(
            Arc::ptr_eq(same.get(&a.id).unwrap(), updated.get(&a.id).unwrap()),
            "an unchanged config keeps its compiled form"
        );
        let removed = same.with_change(5, &a.id, None);
        assert!(removed.get(&a.id).is_none());
        assert_eq!((removed.len(), count(&removed, "a")), (2, 0));
        let removed_twice = removed.with_change(6, &a.id, None);
        assert_eq!(removed_twice.len(), 2);
    }

    #[test]
    fn a_reload_keeps_unchanged_configs_compiled_in_the_same_epoch() {
        let (a, b) = (config("a"), config("b"));
        let before = Snapshot::build(1, vec![a.clone(), b.clone()]).at(Some("e1".into()), 1);
        before.get(&a.id).unwrap().seen().record(0, 1, 1);
        let mut changed = b.clone();
        changed.model_name = "b2".into();
        let after = Snapshot::reload(Some("e1".into()), 2, vec![a.clone(), changed], &before);
        assert_eq!(
            (after.version, after.epoch.as_deref(), after.len()),
            (2, Some("e1"), 2)
        );
        let kept = after.get(&a.id).unwrap();
        assert!(Arc::ptr_eq(kept, before.get(&a.id).unwrap()));
        assert!(Arc::ptr_eq(
            after.matching(&MatchKey {
                model: "a",
                ..Default::default()
            })[0],
            kept
        ));
        assert!(!Arc::ptr_eq(
            after.get(&b.id).unwrap(),
            before.get(&b.id).unwrap()
        ));
        assert_eq!(count(&after, "b2"), 1);
        let other_epoch = Snapshot::reload(Some("e2".into()), 3, vec![a.clone()], &before);
        assert!(
            !Arc::ptr_eq(other_epoch.get(&a.id).unwrap(), kept),
            "the store lost data: what was seen is gone too"
        );
    }

    #[test]
    fn lists_newest_first() {
        let t0 = chrono::Utc::now();
        let mut configs: Vec<ModelConfig> = (0..5).map(|i| config(&format!("m{i}"))).collect();
        for (i, c) in configs.iter_mut().enumerate() {
            // Two configs share a timestamp: the larger id comes first.
            c.created_at = t0 + chrono::Duration::seconds((i as i64).min(3));
        }
        let s = Snapshot::build(1, configs.clone());
        let listed: Vec<_> = s.newest_first().map(|c| c.config.id.clone()).collect();
        let mut expected = configs.clone();
        expected.sort_by(|x, y| (y.created_at, &y.id).cmp(&(x.created_at, &x.id)));
        let expected: Vec<_> = expected.into_iter().map(|c| c.id).collect();
        assert_eq!(listed, expected);
    }

    proptest::proptest! {
        /// A full load (sorted, at once) holds what the same configs applied one at a
        /// time hold: the last config of an id, listed and matched alike.
        #[test]
        fn a_full_load_holds_what_one_change_at_a_time_holds(
            picks in proptest::collection::vec((0usize..6, 0usize..3, 0usize..4), 1..40)
        ) {
            let t0 = chrono::Utc::now();
            let configs: Vec<ModelConfig> = picks
                .iter()
                .map(|&(id, model, age)| {
                    let mut c = config(&format!("m{model}"));
                    c.id = format!("id-{id}").into();
                    c.created_at = t0 + chrono::Duration::seconds(age as i64);
                    c
                })
                .collect();
            let at_once = Snapshot::build(1, configs.clone());
            let one_by_one = configs.iter().fold(Snapshot::empty(), |s, c| {
                s.with_change(1, &c.id, Some(c.clone()))
            });
            let listed = |s: &Snapshot| {
                s.newest_first().map(|c| c.config.clone()).collect::<Vec<_>>()
            };
            proptest::prop_assert_eq!(listed(&at_once), listed(&one_by_one));
            for model in ["m0", "m1", "m2"] {
                proptest::prop_assert_eq!(count(&at_once, model), count(&one_by_one, model));
            }
        }
    }
}
