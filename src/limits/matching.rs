//! Which configs apply to a request: O(1) in the number of configs loaded.

use super::compiled::CompiledConfig;
use crate::model::Scope;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// What a request is matched on.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatchKey<'a> {
    pub model: &'a str,
    pub provider: Option<&'a str>,
    pub virtual_key: Option<&'a str>,
    pub user: Option<&'a str>,
}

/// The configs of one (scope, scope_id, model), in list order (`created_at`, then `id`).
/// Groups are tiny (one config per virtual key and model is the common case), so a
/// change copies its group.
type Group = Arc<Vec<Arc<CompiledConfig>>>;

/// One persistent map from a hash of (scope, scope_id, model) to its group: a snapshot
/// with one config changed shares everything else with its predecessor (a write costs
/// O(log n) here), and a million virtual keys cost a million entries of one map, not a
/// million small maps. Lookups hash borrowed strings (no allocation); a group is checked
/// for the exact names, so a hash collision never matches a wrong config.
#[derive(Debug, Default, Clone)]
pub struct ConfigIndex {
    groups: imbl::HashMap<u64, Group>,
}

/// A fixed hasher: the same names give the same slot in every snapshot of a process.
fn slot(scope: Scope, scope_id: &str, model: &str) -> u64 {
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    scope.hash(&mut h);
    scope_id.hash(&mut h);
    model.hash(&mut h);
    h.finish()
}

/// The scope id a config is indexed under: none for global configs (ignored there).
fn scope_id_of(c: &CompiledConfig) -> &str {
    match c.config.scope {
        Scope::Global => "",
        _ => c.config.scope_id.as_deref().unwrap_or_default(),
    }
}

fn slot_of(c: &CompiledConfig) -> u64 {
    slot(c.config.scope, scope_id_of(c), &c.config.model_name)
}

fn is_in(c: &CompiledConfig, scope: Scope, scope_id: &str, model: &str) -> bool {
    c.config.scope == scope && scope_id_of(c) == scope_id && c.config.model_name == model
}

impl ConfigIndex {
    pub fn build(configs: &[Arc<CompiledConfig>]) -> Self {
        let mut index = ConfigIndex::default();
        for c in configs {
            index.insert(c);
        }
        index
    }

    pub fn insert(&mut self, c: &Arc<CompiledConfig>) {
        let key = slot_of(c);
        let mut group: Vec<_> = self.groups.get(&key).map_or_else(Vec::new, |g| g.to_vec());
        let order = |x: &Arc<CompiledConfig>| (x.config.created_at, x.config.id.clone());
        let at = group
            .binary_search_by(|x| order(x).cmp(&order(c)))
            .unwrap_or_else(|i| i);
        group.insert(at, c.clone());
        self.groups.insert(key, Arc::new(group));
    }

    /// Removes `c` (as it was indexed), dropping a group that becomes empty.
    pub fn remove(&mut self, c: &CompiledConfig) {
        let key = slot_of(c);
        let Some(group) = self.groups.get(&key) else {
            return;
        };
        let rest: Vec<_> = group
            .iter()
            .filter(|x| x.config.id != c.config.id)
            .cloned()
            .collect();
        if rest.is_empty() {
            self.groups.remove(&key);
        } else {
            self.groups.insert(key, Arc::new(rest));
        }
    }

    /// Every config that applies: global, the virtual key's and the user's; exact model
    /// or `*`; the request's provider or any provider.
    pub fn matching<'a>(&'a self, key: &MatchKey<'_>) -> Vec<&'a Arc<CompiledConfig>> {
        let mut out = Vec::new();
        let mut collect = |scope: Scope, scope_id: Option<&str>| {
            let Some(scope_id) = scope_id else { return };
            for model in [key.model, "*"] {
                if let Some(group) = self.groups.get(&slot(scope, scope_id, model)) {
                    out.extend(group.iter().filter(|c| {
                        is_in(c, scope, scope_id, model)
                            && match &c.config.provider {
                                None => true,
                                Some(p) => key.provider == Some(p.as_str()),
                            }
                    }));
                }
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
