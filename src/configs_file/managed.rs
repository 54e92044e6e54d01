//! Which management-API writes a configs file forbids, and the 409 message that says so.
//!
//! Two sources: the marker stored in a config (`managed_by`, written by the replica that
//! reconciled it), which every replica honours, also one started without the file; and
//! this replica's own file, which also covers configs it names that the store does not
//! hold yet and, with prune, every config.

use super::spec::label;
use crate::model::ModelConfig;
use std::collections::HashSet;

/// This replica's configs file, as last read valid.
#[derive(Debug, Clone, Default)]
pub struct ManagedFile {
    /// As given on the command line: the marker stored in the configs it manages.
    pub path: String,
    pub prune: bool,
    identities: HashSet<String>,
}

impl ManagedFile {
    pub fn new(path: String, prune: bool, identities: impl IntoIterator<Item = String>) -> Self {
        ManagedFile {
            path,
            prune,
            identities: identities.into_iter().collect(),
        }
    }

    pub fn names(&self, identity: &str) -> bool {
        self.identities.contains(identity)
    }
}

fn managed(config: &ModelConfig, file: &str) -> String {
    format!(
        "model config {} is managed by the configs file {file}; change it there",
        label(config)
    )
}

/// Why a management-API write must be refused (a 409), if it must. `current`: the
/// config as stored (update, delete); `next`: the config as it would be (create, update).
pub fn refusal(
    local: Option<&ManagedFile>,
    current: Option<&ModelConfig>,
    next: Option<&ModelConfig>,
) -> Option<String> {
    if let Some(c) = current
        && let Some(file) = &c.managed_by
    {
        return Some(managed(c, file));
    }
    let local = local?;
    if local.prune {
        return Some(format!(
            "this tollgate runs with --configs-file {} --configs-file-prune: that file holds every model config; change it there",
            local.path
        ));
    }
    let next = next?;
    local
        .names(&next.identity())
        .then(|| managed(next, &local.path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::create_config;
    use chrono::Utc;
    use serde_json::json;

    fn config(body: serde_json::Value) -> ModelConfig {
        create_config(serde_json::from_value(body).unwrap(), Utc::now()).unwrap()
    }

    #[test]
    fn the_stored_marker_refuses_on_every_replica() {
        let mut c =
            config(json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "vk-1"}));
        assert_eq!(refusal(None, Some(&c), Some(&c)), None);
        c.managed_by = Some("/etc/tollgate/configs.yaml".into());
        assert_eq!(
            refusal(None, Some(&c), None).unwrap(),
            "model config virtual_key vk-1 gpt-4o is managed by the configs file /etc/tollgate/configs.yaml; change it there"
        );
    }

    #[test]
    fn the_marker_is_stored_with_the_config_and_changes_no_hash() {
        let mut c = config(json!({"model_name": "m"}));
        let unmarked = serde_json::to_value(&c).unwrap();
        assert!(
            unmarked.get("managed_by").is_none(),
            "unmanaged configs are stored as before"
        );
        let hash = crate::model::hash::config_hash(&c);
        c.managed_by = Some("/etc/tollgate/configs.yaml".into());
        let stored: ModelConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(
            stored, c,
            "kept through the store's JSON (Redis, sync, re-seed, state files)"
        );
        assert_eq!(crate::model::hash::config_hash(&c), hash);
    }

    #[test]
    fn the_local_file_refuses_what_it_names_and_with_prune_everything() {
        let named = config(json!({"model_name": "a"}));
        let other = config(json!({"model_name": "b"}));
        let file = ManagedFile::new("f.yaml".into(), false, [named.identity()]);
        assert!(
            refusal(Some(&file), None, Some(&named))
                .unwrap()
                .contains("f.yaml")
        );
        assert_eq!(refusal(Some(&file), None, Some(&other)), None);
        assert_eq!(refusal(Some(&file), Some(&other), None), None);
        let all = ManagedFile::new("f.yaml".into(), true, []);
        assert!(
            refusal(Some(&all), Some(&other), None)
                .unwrap()
                .contains("--configs-file-prune")
        );
    }
}
