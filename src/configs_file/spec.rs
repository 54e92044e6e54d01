//! What a configs file says about a config, against what the store holds: the config's
//! spec (its create body, canonical), how to name it to people, and how to write a spec
//! onto a stored config without losing its counters.
//!
//! The spec is the stored config serialized, less its bookkeeping (ids, timestamps,
//! revision, the managed-by marker) and defaults: a field that joins `ModelConfig` joins
//! the comparison, the export and the update by itself.

use crate::model::ModelConfig;
use crate::model::duration::parse_duration_ms;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// Fields of a config that say nothing about what it limits.
const BOOKKEEPING: &[&str] = &["id", "created_at", "updated_at", "revision", "managed_by"];
/// The same inside a budget or a rate limit.
const PART_BOOKKEEPING: &[&str] = &["id", "created_at", "updated_at"];

/// A config's identity for people: `virtual_key vk-1 openai/gpt-4o`, `global *`.
pub fn label(c: &ModelConfig) -> String {
    label_parts(
        c.scope.as_str(),
        c.scope_id.as_deref(),
        Some(&c.model_name),
        c.provider.as_deref(),
    )
}

/// `label` from the parts known (`?` for a missing model).
pub fn label_parts(
    scope: &str,
    scope_id: Option<&str>,
    model: Option<&str>,
    provider: Option<&str>,
) -> String {
    let mut out = scope.to_string();
    if let Some(id) = scope_id {
        out.push(' ');
        out.push_str(id);
    }
    out.push(' ');
    if let Some(p) = provider {
        out.push_str(p);
        out.push('/');
    }
    out.push_str(model.unwrap_or("?"));
    out
}

/// The config as a canonical create body: no bookkeeping, no nulls, no defaults
/// (`calendar_aligned: false`, `budgets: []`).
pub fn spec(c: &ModelConfig) -> Map<String, Value> {
    let mut map = match serde_json::to_value(c) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for key in BOOKKEEPING {
        map.remove(*key);
    }
    if let Some(Value::Array(budgets)) = map.get_mut("budgets") {
        for b in budgets.iter_mut() {
            strip(b, PART_BOOKKEEPING);
        }
    }
    if let Some(rl) = map.get_mut("rate_limit") {
        strip(rl, PART_BOOKKEEPING);
    }
    drop_nulls(&mut map);
    if map.get("calendar_aligned") == Some(&Value::Bool(false)) {
        map.remove("calendar_aligned");
    }
    if map
        .get("budgets")
        .is_some_and(|b| b.as_array().is_some_and(Vec::is_empty))
    {
        map.remove("budgets");
    }
    map
}

fn strip(value: &mut Value, keys: &[&str]) {
    if let Value::Object(map) = value {
        for key in keys {
            map.remove(*key);
        }
    }
}

fn drop_nulls(map: &mut Map<String, Value>) {
    map.retain(|_, v| !v.is_null());
    for v in map.values_mut() {
        match v {
            Value::Object(inner) => drop_nulls(inner),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(inner) = item {
                        drop_nulls(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

/// True when `a` and `b` limit the same things in the same way.
pub fn same_spec(a: &ModelConfig, b: &ModelConfig) -> bool {
    spec(a) == spec(b)
}

/// The top-level fields whose specs differ, for messages.
pub fn differing_fields(a: &ModelConfig, b: &ModelConfig) -> Vec<String> {
    let (a, b) = (spec(a), spec(b));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// A `PUT` body that makes a stored config equal to `desired`. On update a field that is
/// absent or null is unchanged, so every field the spec leaves out is cleared explicitly.
pub fn update_body(desired: &ModelConfig) -> Value {
    let mut body = spec(desired);
    body.entry("provider").or_insert_with(|| json!(""));
    body.entry("budgets").or_insert_with(|| json!([]));
    body.entry("rate_limit").or_insert_with(|| json!({}));
    body.entry("calendar_aligned")
        .or_insert_with(|| json!(false));
    body.entry("enforcement")
        .or_insert_with(|| json!("enforce"));
    body.entry("alert_thresholds")
        .or_insert_with(|| json!("default"));
    Value::Object(body)
}

/// `desired` written onto `current` as the management API's update would: the same id,
/// creation time and rate limit id, and each budget matched by an equal reset duration
/// keeps its id (so its counters); the store seeds a budget that is new and drops the
/// counters of one that is gone.
pub fn carry_over(
    current: &ModelConfig,
    desired: &ModelConfig,
    now: DateTime<Utc>,
    marker: Option<&str>,
) -> ModelConfig {
    let mut next = desired.clone();
    next.id = current.id.clone();
    next.created_at = current.created_at;
    next.updated_at = now;
    next.revision = current.revision + 1;
    next.managed_by = marker.map(Into::into);
    let duration = |d: &str| parse_duration_ms(d).ok();
    for b in &mut next.budgets {
        b.updated_at = now;
        let ms = duration(&b.reset_duration);
        match current
            .budgets
            .iter()
            .find(|o| ms.is_some() && duration(&o.reset_duration) == ms)
        {
            Some(old) => {
                b.id = old.id.clone();
                b.created_at = old.created_at;
            }
            None => b.created_at = now,
        }
    }
    if let Some(rl) = &mut next.rate_limit {
        rl.updated_at = now;
        match &current.rate_limit {
            Some(old) => {
                rl.id = old.id.clone();
                rl.created_at = old.created_at;
            }
            None => rl.created_at = now,
        }
    }
    next
}

/// `desired` as a new config: fresh ids, stamped `now`, carrying `marker`.
pub fn fresh(desired: &ModelConfig, now: DateTime<Utc>, marker: Option<&str>) -> ModelConfig {
    use crate::model::validate::new_id;
    let mut next = desired.clone();
    next.id = new_id();
    next.created_at = now;
    next.updated_at = now;
    next.revision = 1;
    next.managed_by = marker.map(Into::into);
    for b in &mut next.budgets {
        b.id = new_id();
        b.created_at = now;
        b.updated_at = now;
    }
    if let Some(rl) = &mut next.rate_limit {
        rl.id = new_id();
        rl.created_at = now;
        rl.updated_at = now;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::create_config;

    pub(crate) fn config(body: Value) -> ModelConfig {
        create_config(serde_json::from_value(body).unwrap(), Utc::now()).unwrap()
    }

    #[test]
    fn the_spec_is_the_create_body_without_bookkeeping_or_defaults() {
        let c = config(
            json!({"model_name": "gpt-4o", "scope": "user", "scope_id": "u1",
            "budgets": [{"max_limit": 5, "reset_duration": "1d"}],
            "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1m"}}),
        );
        assert_eq!(
            Value::Object(spec(&c)),
            json!({"model_name": "gpt-4o", "scope": "user", "scope_id": "u1",
                "budgets": [{"max_limit": 5.0, "reset_duration": "1d"}],
                "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1m"}})
        );
        let bare = config(json!({"model_name": "*", "calendar_aligned": false, "budgets": []}));
        assert_eq!(
            Value::Object(spec(&bare)),
            json!({"model_name": "*", "scope": "global"})
        );
    }

    #[test]
    fn ids_timestamps_and_the_marker_do_not_make_a_difference() {
        let body =
            json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "1h"}]});
        let (a, mut b) = (config(body.clone()), config(body));
        assert_ne!(a.id, b.id);
        b.managed_by = Some("/etc/f.yaml".into());
        b.revision = 9;
        assert!(same_spec(&a, &b));
        let c = config(
            json!({"model_name": "m", "budgets": [{"max_limit": 2, "reset_duration": "1h"}]}),
        );
        assert!(!same_spec(&a, &c));
        assert_eq!(differing_fields(&a, &c), ["budgets"]);
    }

    #[test]
    fn labels_name_scope_scope_id_provider_and_model() {
        let c = config(
            json!({"model_name": "gpt-4o", "provider": "openai", "scope": "virtual_key", "scope_id": "vk-1"}),
        );
        assert_eq!(label(&c), "virtual_key vk-1 openai/gpt-4o");
        assert_eq!(label(&config(json!({"model_name": "*"}))), "global *");
    }

    #[test]
    fn an_update_body_clears_what_the_spec_leaves_out() {
        let c = config(json!({"model_name": "m", "scope": "user", "scope_id": "u"}));
        assert_eq!(
            update_body(&c),
            json!({"model_name": "m", "scope": "user", "scope_id": "u", "provider": "",
                "budgets": [], "rate_limit": {}, "calendar_aligned": false,
                "enforcement": "enforce", "alert_thresholds": "default"})
        );
    }

    #[test]
    fn carry_over_keeps_the_ids_that_hold_counters() {
        let current = config(json!({"model_name": "m",
            "budgets": [{"max_limit": 1, "reset_duration": "1d"}, {"max_limit": 9, "reset_duration": "1w"}],
            "rate_limit": {"token_max_limit": 10, "token_reset_duration": "1m"}}));
        let desired = config(json!({"model_name": "m",
            "budgets": [{"max_limit": 2, "reset_duration": "24h"}, {"max_limit": 3, "reset_duration": "1M"}],
            "rate_limit": {"token_max_limit": 20, "token_reset_duration": "1m"}}));
        let now = Utc::now();
        let next = carry_over(&current, &desired, now, Some("f.yaml"));
        assert_eq!(
            (&next.id, next.created_at, next.revision),
            (&current.id, current.created_at, current.revision + 1)
        );
        assert_eq!(next.budgets[0].id, current.budgets[0].id, "1d = 24h");
        assert!(current.budgets.iter().all(|b| b.id != next.budgets[1].id));
        assert_eq!(
            next.rate_limit.as_ref().unwrap().id,
            current.rate_limit.as_ref().unwrap().id
        );
        assert!(same_spec(&next, &desired));
        assert_eq!(next.managed_by.as_deref(), Some("f.yaml"));
    }

    #[test]
    fn fresh_configs_share_no_ids_with_the_file() {
        let d = config(
            json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "1d"}]}),
        );
        let a = fresh(&d, Utc::now(), None);
        assert_ne!(a.id, d.id);
        assert_ne!(a.budgets[0].id, d.budgets[0].id);
        assert!(same_spec(&a, &d) && a.managed_by.is_none());
    }
}
