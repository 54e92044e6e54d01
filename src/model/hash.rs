//! `config_hash`: a stable hash of a config's identity and limits, for config-sync tools
//! that compare a desired config with what is stored.
//!
//! SHA-256, hex, over `field:len:value;` records (Bifrost's `writeHashField` framing in
//! `framework/configstore/clientconfig.go`, so no two field sequences collide by
//! concatenation). Bifrost's `GenerateModelConfigHash` hashes id, model_name, provider,
//! scope, scope_id and the ids of the budgets and rate limit; its `GenerateBudgetHash` and
//! `GenerateRateLimitHash` hash each one's id, maxes and durations. Here the config's hash
//! covers both, so it changes whenever identity or any limit does:
//!
//! `id`, `model_name`, `provider` (`""` = all), `scope`, `scope_id` (`""` for global),
//! `calendar_aligned`, then per budget in id order `budget_id`, `budget_max_limit`,
//! `budget_reset_duration`, then, if there is a rate limit, `rate_limit_id`,
//! `token_max_limit`, `token_reset_duration`, `request_max_limit`,
//! `request_reset_duration` (absent values as `""`); then `enforcement` only when it is
//! `shadow`, and `alert_thresholds` (comma-separated) only when the config has its own,
//! so a config without them keeps the hash it always had. Numbers are written as Rust's
//! shortest round-trip form (`120`, `5.5`). Usage, timestamps, revision and the
//! configs-file marker are not hashed: they change without the config changing.

use super::config::{Budget, ModelConfig, RateLimit};
use sha2::{Digest, Sha256};

struct Fields(Sha256);

impl Fields {
    fn new() -> Self {
        Fields(Sha256::new())
    }

    fn field(&mut self, name: &str, value: &str) -> &mut Self {
        self.0.update(name.as_bytes());
        self.0.update(b":");
        self.0.update(value.len().to_string().as_bytes());
        self.0.update(b":");
        self.0.update(value.as_bytes());
        self.0.update(b";");
        self
    }

    fn budget(&mut self, b: &Budget) -> &mut Self {
        self.field("budget_id", &b.id)
            .field("budget_max_limit", &b.max_limit.to_string())
            .field("budget_reset_duration", &b.reset_duration)
    }

    fn rate_limit(&mut self, rl: &RateLimit) -> &mut Self {
        let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
        self.field("rate_limit_id", &rl.id)
            .field("token_max_limit", &number(rl.token_max_limit))
            .field(
                "token_reset_duration",
                rl.token_reset_duration.as_deref().unwrap_or(""),
            )
            .field("request_max_limit", &number(rl.request_max_limit))
            .field(
                "request_reset_duration",
                rl.request_reset_duration.as_deref().unwrap_or(""),
            )
    }

    fn hex(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The config's hash: identity and every limit (see the module doc).
pub fn config_hash(c: &ModelConfig) -> String {
    let mut h = Fields::new();
    h.field("id", &c.id)
        .field("model_name", &c.model_name)
        .field("provider", c.provider.as_deref().unwrap_or(""))
        .field("scope", c.scope.as_str())
        .field("scope_id", c.scope_id.as_deref().unwrap_or(""))
        .field(
            "calendar_aligned",
            if c.calendar_aligned { "true" } else { "false" },
        );
    let mut budgets: Vec<&Budget> = c.budgets.iter().collect();
    budgets.sort_by(|a, b| a.id.cmp(&b.id));
    for b in budgets {
        h.budget(b);
    }
    if let Some(rl) = &c.rate_limit {
        h.rate_limit(rl);
    }
    if !c.enforcement.is_enforce() {
        h.field("enforcement", c.enforcement.as_str());
    }
    if let Some(thresholds) = &c.alert_thresholds {
        let list: Vec<String> = thresholds.iter().map(f64::to_string).collect();
        h.field("alert_thresholds", &list.join(","));
    }
    h.hex()
}

/// One budget's hash (Bifrost's `GenerateBudgetHash` fields: id, max, duration).
pub fn budget_hash(b: &Budget) -> String {
    let mut h = Fields::new();
    h.budget(b);
    h.hex()
}

/// The rate limit's hash (Bifrost's `GenerateRateLimitHash` fields).
pub fn rate_limit_hash(rl: &RateLimit) -> String {
    let mut h = Fields::new();
    h.rate_limit(rl);
    h.hex()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::{create_config, update_config};
    use chrono::Utc;
    use serde_json::json;

    fn config() -> ModelConfig {
        create_config(
            serde_json::from_value(json!({"model_name": "m", "provider": "openai",
                "budgets": [{"max_limit": 1, "reset_duration": "1d"}, {"max_limit": 2, "reset_duration": "1w"}],
                "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"}}))
            .unwrap(),
            Utc::now(),
        )
        .unwrap()
    }

    fn updated(c: &ModelConfig, body: serde_json::Value) -> ModelConfig {
        update_config(c, serde_json::from_value(body).unwrap(), Utc::now()).unwrap()
    }

    #[test]
    fn is_sha256_hex_and_ignores_order_usage_and_timestamps() {
        let c = config();
        let h = config_hash(&c);
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let mut reordered = c.clone();
        reordered.budgets.reverse();
        reordered.updated_at = Utc::now() + chrono::Duration::days(1);
        reordered.revision += 7;
        assert_eq!(config_hash(&reordered), h);
        // A write that changes nothing hashed keeps the hash.
        assert_eq!(config_hash(&updated(&c, json!({}))), h);
    }

    #[test]
    fn changes_with_identity_and_every_limit() {
        let c = config();
        let h = config_hash(&c);
        for change in [
            json!({"model_name": "n"}),
            json!({"provider": ""}),
            json!({"calendar_aligned": true}),
            json!({"budgets": [{"max_limit": 1.5, "reset_duration": "1d"}, {"max_limit": 2, "reset_duration": "1w"}]}),
            json!({"budget": {"reset_duration": "2d"}}),
            json!({"rate_limit": {"request_max_limit": 6, "request_reset_duration": "1m"}}),
            json!({"rate_limit": {"request_max_limit": 5, "request_reset_duration": "2m"}}),
            json!({"rate_limit": {}}),
            json!({"enforcement": "shadow"}),
            json!({"alert_thresholds": [0.5]}),
            json!({"alert_thresholds": []}),
        ] {
            assert_ne!(config_hash(&updated(&c, change.clone())), h, "{change}");
        }
        // Back to the defaults: back to the hash it always had.
        let back = updated(
            &updated(
                &c,
                json!({"enforcement": "shadow", "alert_thresholds": [0.5]}),
            ),
            json!({"enforcement": "enforce", "alert_thresholds": "default"}),
        );
        assert_eq!(config_hash(&back), h);
        assert_ne!(budget_hash(&c.budgets[0]), budget_hash(&c.budgets[1]));
        assert_eq!(rate_limit_hash(c.rate_limit.as_ref().unwrap()).len(), 64);
    }

    #[test]
    fn framing_keeps_fields_apart() {
        let mut a = Fields::new();
        a.field("x", "ab").field("y", "");
        let mut b = Fields::new();
        b.field("x", "a").field("y", "b");
        assert_ne!(a.hex(), b.hex());
    }
}
