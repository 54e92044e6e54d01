//! Which configs apply to a request: O(1) in the number of configs loaded.

use super::compiled::CompiledConfig;
use super::filling::filling_order;
use crate::model::Scope;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// What a request is matched on.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatchKey<'a> {
    pub model: &'a str,
    pub provider: Option<&'a str>,
    pub virtual_key: Option<&'a str>,
    pub user: Option<&'a str>,
}

/// The configs under one key, in list order (`created_at`, then `id`). Groups are tiny
/// (one config per virtual key and model is the common case), so one config is held
/// without an allocation of its own, and a change copies its group.
#[derive(Debug, Clone)]
enum Group {
    One(Arc<CompiledConfig>),
    Many(Arc<[Arc<CompiledConfig>]>),
}

impl Group {
    fn as_slice(&self) -> &[Arc<CompiledConfig>] {
        match self {
            Group::One(c) => std::slice::from_ref(c),
            Group::Many(all) => all,
        }
    }

    fn of(mut configs: Vec<Arc<CompiledConfig>>) -> Option<Group> {
        match configs.len() {
            0 => None,
            1 => configs.pop().map(Group::One),
            _ => Some(Group::Many(configs.into())),
        }
    }
}

/// Configs grouped under a 64-bit key, each group in list order: one persistent map, so
/// a snapshot with one config changed shares everything else with its predecessor (a
/// write costs O(log n)), and a million small groups cost a million entries of one map,
/// not a million maps. A B-tree (`OrdMap`): about 30 bytes per entry where `imbl`'s
/// hash trie takes about 120. Keys are hashes of names: readers check the names, so a hash
/// collision never yields a wrong config.
#[derive(Debug, Default, Clone)]
pub struct Groups(imbl::OrdMap<u64, Group>);

impl Groups {
    pub fn insert(&mut self, key: u64, c: &Arc<CompiledConfig>) {
        let mut group: Vec<_> = self.get(key).to_vec();
        let at = group
            .binary_search_by(|x| x.config.list_order().cmp(&c.config.list_order()))
            .unwrap_or_else(|i| i);
        group.insert(at, c.clone());
        self.0
            .insert(key, Group::of(group).expect("a group with c in it"));
    }

    /// Removes `c`, dropping a group that becomes empty.
    pub fn remove(&mut self, key: u64, c: &CompiledConfig) {
        let rest: Vec<_> = self
            .get(key)
            .iter()
            .filter(|x| x.config.id != c.config.id)
            .cloned()
            .collect();
        match Group::of(rest) {
            None => self.0.remove(&key),
            Some(group) => self.0.insert(key, group),
        };
    }

    /// The group under `key`, oldest first.
    pub fn get(&self, key: u64) -> &[Arc<CompiledConfig>] {
        self.0.get(&key).map_or(&[], Group::as_slice)
    }
}

/// Every config under one key per scope id (a virtual key's or a user's configs, all
/// models) and one per global model: what a check matches and what the list's
/// `scope_id` filter pages through, from one map entry per group.
#[derive(Debug, Default, Clone)]
pub struct ConfigIndex {
    groups: Groups,
}

/// A fixed hasher: the same names give the same key in every snapshot of a process.
/// FxHash: several keys are hashed per check, and SipHash was 4 % of the sidecar's CPU;
/// a collision costs only a longer scan, since readers check the names.
pub fn name_key(names: impl Hash) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(names)
}

/// The key of a scope id's group (virtual keys and users alike).
fn scope_id_key(scope_id: &str) -> u64 {
    name_key(scope_id)
}

/// The key of a global model's group.
fn global_key(model: &str) -> u64 {
    name_key((Scope::Global, model))
}

fn key_of(c: &CompiledConfig) -> u64 {
    match (c.config.scope, &c.config.scope_id) {
        (Scope::Global, _) | (_, None) => global_key(&c.config.model_name),
        (_, Some(scope_id)) => scope_id_key(scope_id),
    }
}

/// The scope id a config is matched under: none for global configs (ignored there).
fn scope_id_of(c: &CompiledConfig) -> &str {
    match c.config.scope {
        Scope::Global => "",
        _ => c.config.scope_id.as_deref().unwrap_or_default(),
    }
}

fn is_in(c: &CompiledConfig, scope: Scope, scope_id: &str, model: &str) -> bool {
    c.config.scope == scope && scope_id_of(c) == scope_id && c.config.model_name == model
}

impl ConfigIndex {
    pub fn build(configs: &[Arc<CompiledConfig>]) -> Self {
        Self::of_all(configs.iter())
    }

    /// The index of `configs` (distinct ids), built at once as a full load does: sorted
    /// into groups, then each group inserted once, in `filling_order`.
    pub fn of_all<'a>(configs: impl Iterator<Item = &'a Arc<CompiledConfig>>) -> Self {
        let mut keyed: Vec<(u64, &Arc<CompiledConfig>)> = configs.map(|c| (key_of(c), c)).collect();
        keyed.sort_unstable_by(|(ka, a), (kb, b)| {
            ka.cmp(kb)
                .then_with(|| a.config.list_order().cmp(&b.config.list_order()))
        });
        let groups: Vec<(u64, Group)> = keyed
            .chunk_by(|a, b| a.0 == b.0)
            .map(|run| {
                let group = run.iter().map(|(_, c)| Arc::clone(c)).collect();
                (run[0].0, Group::of(group).expect("a run is never empty"))
            })
            .collect();
        ConfigIndex {
            groups: Groups(filling_order(&groups).collect()),
        }
    }

    pub fn insert(&mut self, c: &Arc<CompiledConfig>) {
        self.groups.insert(key_of(c), c);
    }

    /// Removes `c` (as it was indexed).
    pub fn remove(&mut self, c: &CompiledConfig) {
        self.groups.remove(key_of(c), c);
    }

    /// The virtual keys' and users' configs whose `scope_id` is `scope_id`, oldest
    /// first: O(their number).
    pub fn with_scope_id<'a>(
        &'a self,
        scope_id: &'a str,
    ) -> impl DoubleEndedIterator<Item = &'a Arc<CompiledConfig>> + 'a {
        self.groups
            .get(scope_id_key(scope_id))
            .iter()
            .filter(move |c| {
                c.config.scope != Scope::Global && c.config.scope_id.as_deref() == Some(scope_id)
            })
    }

    /// Every config that applies: global, the virtual key's and the user's; exact model
    /// or `*`; the request's provider or any provider.
    pub fn matching<'a>(&'a self, key: &MatchKey<'_>) -> Vec<&'a Arc<CompiledConfig>> {
        let mut out = Vec::new();
        let mut collect = |scope: Scope, scope_id: Option<&str>| {
            let Some(scope_id) = scope_id else { return };
            for model in [key.model, "*"] {
                let group = match scope {
                    Scope::Global => self.groups.get(global_key(model)),
                    _ => self.groups.get(scope_id_key(scope_id)),
                };
                out.extend(group.iter().filter(|c| {
                    is_in(c, scope, scope_id, model)
                        && match &c.config.provider {
                            None => true,
                            Some(p) => key.provider == Some(p.as_str()),
                        }
                }));
                if key.model == "*" {
                    break;
                }
            }
        };
        collect(Scope::Global, Some(""));
        collect(Scope::VirtualKey, key.virtual_key);
        collect(Scope::User, key.user);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::create_config;
    use chrono::Utc;
    use proptest::prelude::*;
    use serde_json::json;

    fn compiled(bodies: Vec<serde_json::Value>) -> Vec<Arc<CompiledConfig>> {
        bodies
            .into_iter()
            .map(|b| {
                let cfg = create_config(serde_json::from_value(b).unwrap(), Utc::now()).unwrap();
                Arc::new(CompiledConfig::compile(cfg).unwrap())
            })
            .collect()
    }

    fn names(configs: &[Arc<CompiledConfig>], key: MatchKey) -> Vec<String> {
        let index = ConfigIndex::build(configs);
        index
            .matching(&key)
            .into_iter()
            .map(|c| {
                let c = &c.config;
                format!(
                    "{}/{}/{}/{}",
                    c.scope.as_str(),
                    c.scope_id.as_deref().unwrap_or("-"),
                    c.model_name,
                    c.provider.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }

    #[test]
    fn matches_scopes_models_and_providers() {
        let configs = compiled(vec![
            json!({"model_name": "*"}),
            json!({"model_name": "gpt-4o", "provider": "openai"}),
            json!({"model_name": "gpt-4o", "provider": "azure"}),
            json!({"model_name": "claude"}),
            json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "vk-1"}),
            json!({"model_name": "*", "scope": "virtual_key", "scope_id": "vk-2"}),
            json!({"model_name": "*", "scope": "user", "scope_id": "u-1"}),
        ]);
        let key = MatchKey {
            model: "gpt-4o",
            provider: Some("openai"),
            virtual_key: Some("vk-1"),
            user: Some("u-1"),
        };
        assert_eq!(
            names(&configs, key),
            [
                "global/-/gpt-4o/openai",
                "global/-/*/-",
                "virtual_key/vk-1/gpt-4o/-",
                "user/u-1/*/-"
            ]
        );
        // Without a provider, provider-specific configs do not apply.
        let key = MatchKey {
            model: "gpt-4o",
            provider: None,
            virtual_key: None,
            user: None,
        };
        assert_eq!(names(&configs, key), ["global/-/*/-"]);
        // A user id equal to a virtual key id does not match the virtual key's configs.
        let key = MatchKey {
            model: "x",
            provider: None,
            virtual_key: None,
            user: Some("vk-2"),
        };
        assert_eq!(names(&configs, key), ["global/-/*/-"]);
    }

    proptest! {
        /// The index finds exactly what a linear scan of the rules finds.
        #[test]
        fn index_agrees_with_a_linear_scan(
            specs in prop::collection::vec((0u8..3, 0u8..3, 0u8..3, 0u8..3), 0..40),
            model in 0u8..3, provider in prop::option::of(0u8..2),
            vk in prop::option::of(0u8..3), user in prop::option::of(0u8..3),
        ) {
            let models = ["a", "b", "*"];
            let bodies = specs.iter().enumerate().map(|(i, &(scope, sid, m, p))| {
                let scope = ["global", "virtual_key", "user"][scope as usize];
                let mut b = json!({"model_name": models[m as usize], "scope": scope, "scope_id": format!("s{sid}")});
                if p < 2 { b["provider"] = json!(format!("p{p}")); }
                b["calendar_aligned"] = json!(i % 2 == 0);
                b
            }).collect();
            let configs = compiled(bodies);
            let model = models[model as usize];
            let provider = provider.map(|p| format!("p{p}"));
            let vk = vk.map(|v| format!("s{v}"));
            let user = user.map(|u| format!("s{u}"));
            let key = MatchKey { model, provider: provider.as_deref(), virtual_key: vk.as_deref(), user: user.as_deref() };
            let mut index = ConfigIndex::build(&configs);
            // Removing and re-inserting every other config leaves the same index.
            for c in configs.iter().step_by(2) { index.remove(c); }
            for c in configs.iter().step_by(2) { index.insert(c); }
            let mut found: Vec<usize> = index.matching(&key).into_iter()
                .map(|m| configs.iter().position(|c| Arc::ptr_eq(c, m)).unwrap())
                .collect();
            found.sort();
            let expected: Vec<usize> = configs.iter().enumerate().filter(|(_, c)| {
                let c = &c.config;
                let scope_ok = match c.scope {
                    Scope::Global => true,
                    Scope::VirtualKey => c.scope_id.as_deref() == key.virtual_key,
                    Scope::User => c.scope_id.as_deref() == key.user,
                };
                let model_ok = c.model_name == key.model || c.model_name == "*";
                let provider_ok = c.provider.is_none() || c.provider.as_deref() == key.provider;
                scope_ok && model_ok && provider_ok
            }).map(|(i, _)| i).collect();
            prop_assert_eq!(found, expected);
        }
    }
}
