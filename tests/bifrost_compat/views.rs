//! What lists and views show: pagination clamping and unknown scopes (`getModelConfigs`),
//! and config hashes across reads, usage and writes.

use super::{CONFIGS, path};
use crate::common::{Backend, Tollgate};
use serde_json::{Value, json};

on_every_store!(
    list_clamps_limit_and_unknown_scope_is_an_empty_page,
    config_hash_tracks_identity_and_limits,
);

/// governance.go `getModelConfigs`: limit/offset go through `strconv.Atoi` (non-numeric
/// or negative: 400) then handlers/utils.go `ClampPaginationParams` (≤ 0 → 25, > 100 →
/// 100); `scope` is a store filter (`WHERE scope = ?`), so one that names no scope finds
/// nothing; `from_memory` is memory only when it equals "true".
async fn list_clamps_limit_and_unknown_scope_is_an_empty_page(b: Backend) {
    let t = Tollgate::start(b).await;
    for i in 0..3 {
        t.create(json!({"model_name": format!("m{i}")})).await;
    }
    for (query, limit, count) in [
        ("limit=500", 100, 3),
        ("limit=0", 25, 3),
        ("limit=2", 2, 2),
        ("limit=0&offset=2", 25, 1),
    ] {
        let a = t.get(&format!("{CONFIGS}?{query}")).await;
        assert_eq!(a.status, 200, "{query}: {}", a.body);
        assert_eq!(a.body["limit"], limit, "{query}");
        assert_eq!(a.body["count"], count, "{query}");
        assert_eq!(a.body["total_count"], 3, "{query}");
    }
    for query in ["scope=team", "scope=team&from_memory=true"] {
        let a = t.get(&format!("{CONFIGS}?{query}")).await;
        assert_eq!(a.status, 200, "{query}: {}", a.body);
        assert_eq!(a.body["model_configs"], json!([]), "{query}");
        assert_eq!(a.body["total_count"], 0, "{query}");
    }
    for query in ["from_memory=yes", "from_memory=1", "from_memory=TRUE"] {
        let a = t.get(&format!("{CONFIGS}?{query}")).await;
        assert_eq!(a.status, 200, "{query}: {}", a.body);
        assert_eq!(a.body["total_count"], 3, "{query}");
    }
    for bad in ["limit=-1", "limit=ten", "offset=-5", "offset=x"] {
        let a = t.get(&format!("{CONFIGS}?{bad}")).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.message().contains(bad.split('=').next().unwrap()));
    }
}

/// framework/configstore/clientconfig.go `GenerateModelConfigHash` (SHA-256 hex over
/// `writeHashField` records of id, names, scope and the budget/rate-limit ids),
/// `GenerateBudgetHash` and `GenerateRateLimitHash` (id, maxes, durations); the seeds show
/// `config_hash` on budgets and the rate limit. tollgate's config hash covers identity and
/// every limit (src/model/hash.rs).
async fn config_hash_tracks_identity_and_limits(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(
            json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "1d"}],
            "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1h"}}),
        )
        .await;
    let hash = |c: &Value| c["config_hash"].as_str().unwrap().to_string();
    let c = t.config(&id).await;
    let h = hash(&c);
    assert_eq!(h.len(), 64);
    assert!(h.bytes().all(|x| x.is_ascii_hexdigit()));
    assert_eq!(hash(&c["budgets"][0]).len(), 64);
    assert_eq!(hash(&c["rate_limit"]).len(), 64);
    // Stable across reads, usage and every view.
    assert_eq!(
        t.check(json!({"model": "m", "cost": 0.5})).await.status,
        200
    );
    assert_eq!(hash(&t.config(&id).await), h);
    let listed = t.get(CONFIGS).await;
    assert_eq!(hash(&listed.body["model_configs"][0]), h);
    let memory = t.get(&format!("{CONFIGS}?from_memory=true")).await;
    assert_eq!(hash(&memory.body["model_configs"][0]), h);
    // A write that changes nothing hashed keeps it; a limit change changes it.
    let a = t.put(&path(&id), &json!({"rate_limit": null})).await;
    assert_eq!(hash(&a.body["model_config"]), h);
    let a = t
        .put(
            &path(&id),
            &json!({"budgets": [{"max_limit": 2, "reset_duration": "1d"}]}),
        )
        .await;
    let h2 = hash(&a.body["model_config"]);
    assert_ne!(h2, h);
    let a = t.put(&path(&id), &json!({"model_name": "m2"})).await;
    assert_ne!(hash(&a.body["model_config"]), h2);
    // Two configs never share one (the id is hashed).
    let other = t.create(json!({"model_name": "m"})).await;
    assert_ne!(hash(&t.config(&other).await), hash(&t.config(&id).await));
}
