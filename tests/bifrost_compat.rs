//! Bifrost's model-config API behaviour, pinned case by case, on both stores.
//! Each case cites where Bifrost does it, in `maximhq/bifrost`:
//! - `transports/bifrost-http/handlers/governance.go` (the handlers),
//! - `transports/bifrost-http/handlers/utils.go` (`SendError`, `ClampPaginationParams`),
//! - `framework/configstore/tables/` (`modelconfig.go`, `budget.go`, `ratelimit.go`,
//!   `utils.go`), and `framework/configstore/clientconfig.go` (the config hashes).
//!
//! Where Bifrost answers 500 for bad input (validation inside its transaction), tollgate
//! answers the 4xx that says what is wrong; those cases say so.

#[macro_use]
mod common;

use common::{Backend, Tollgate};
use serde_json::{Value, json};

const CONFIGS: &str = "/api/governance/model-configs";

on_every_store!(
    put_with_every_unset_field_null_changes_nothing,
    put_provider_empty_string_widens_to_every_provider,
    put_rate_limit_empty_object_removes_it,
    bodies_are_json_whatever_the_content_type,
    create_with_empty_scope_is_global,
    duration_words_in_any_letter_case,
    errors_carry_extra_fields,
    list_clamps_limit_and_unknown_scope_is_an_empty_page,
    new_budget_starts_with_closest_shorter_budgets_usage,
    legacy_budget_on_put_updates_the_first_budget_or_creates_it,
    config_hash_tracks_identity_and_limits,
    bad_input_bifrost_answers_500_for_is_a_4xx_here,
);

fn path(id: &str) -> String {
    format!("{CONFIGS}/{id}")
}

/// `budgets` of a config view by duration: (id, max_limit, current_usage).
fn budget<'a>(config: &'a Value, duration: &str) -> &'a Value {
    config["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["reset_duration"] == duration)
        .unwrap_or_else(|| panic!("no {duration} budget in {config}"))
}

/// governance.go `updateModelConfig`: every field of `UpdateModelConfigRequest` is a
/// pointer tested with `if req.X != nil`, so a Go client that marshals its unset pointers
/// as `null` changes only what it set.
async fn put_with_every_unset_field_null_changes_nothing(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "provider": "openai",
            "budgets": [{"max_limit": 10, "reset_duration": "1d"}],
            "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1h"}}))
        .await;
    let check = json!({"model": "m", "provider": "openai", "cost": 1.5});
    assert_eq!(t.check(check.clone()).await.status, 200);
    let before = t.config(&id).await;
    let a = t
        .put(
            &path(&id),
            &json!({"model_name": null, "provider": null, "scope": null, "scope_id": null,
                    "calendar_aligned": null, "budgets": null, "budget": null,
                    "rate_limit": null}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let after = &a.body["model_config"];
    for field in [
        "model_name",
        "provider",
        "scope",
        "calendar_aligned",
        "config_hash",
    ] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(after["rate_limit"]["id"], before["rate_limit"]["id"]);
    assert_eq!(after["rate_limit"]["request_current_usage"], 1);
    assert_eq!(after["budgets"][0]["id"], before["budgets"][0]["id"]);
    assert_eq!(after["budgets"][0]["current_usage"], 1.5);
    // Only the field that was set changes; the limits still count.
    let a = t
        .put(
            &path(&id),
            &json!({"provider": null, "rate_limit": null, "budgets": null,
                    "calendar_aligned": true}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["model_config"]["calendar_aligned"], true);
    assert_eq!(a.body["model_config"]["provider"], "openai");
    assert_eq!(a.body["model_config"]["rate_limit"]["request_max_limit"], 5);
    let denied = json!({"model": "m", "provider": "openai", "requests": 5});
    assert_eq!(
        t.check(denied).await.status,
        429,
        "the rate limit still applies"
    );
}

/// governance.go `updateModelConfig` stores `""` (`mc.Provider = req.Provider`) and the
/// model-config `BeforeSave` hook (tables/modelconfig.go) refuses it: a 500.
/// tollgate gives `""` its one meaning: every provider.
async fn put_provider_empty_string_widens_to_every_provider(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "provider": "openai",
            "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}}))
        .await;
    assert_eq!(
        t.check(json!({"model": "m", "provider": "anthropic"}))
            .await
            .body["limits"],
        json!([]),
        "only openai is limited"
    );
    let a = t.put(&path(&id), &json!({"provider": ""})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["model_config"]["provider"], Value::Null);
    assert_eq!(
        t.check(json!({"model": "m", "provider": "anthropic"}))
            .await
            .status,
        200
    );
    assert_eq!(
        t.check(json!({"model": "m", "provider": "x"})).await.status,
        429
    );
}

/// governance.go `updateModelConfig`: `rateLimitIsEmpty` (both maxes nil) deletes the
/// rate limit, whatever the durations say.
async fn put_rate_limit_empty_object_removes_it(b: Backend) {
    let t = Tollgate::start(b).await;
    for removal in [
        json!({}),
        json!({"token_max_limit": null, "request_max_limit": null}),
        json!({"request_reset_duration": "1m"}),
    ] {
        let id = t
            .create(json!({"model_name": format!("m{removal}"),
                "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}}))
            .await;
        let a = t.put(&path(&id), &json!({ "rate_limit": removal })).await;
        assert_eq!(a.status, 200, "{removal}: {}", a.body);
        assert_eq!(
            a.body["model_config"]["rate_limit"],
            Value::Null,
            "{removal}"
        );
        assert_eq!(t.config(&id).await["rate_limit"], Value::Null);
    }
}

/// governance.go `createModelConfig`/`updateModelConfig`: `json.Unmarshal(ctx.PostBody(),
/// &req)` never looks at Content-Type (so `curl -d` without `-H` works); bad JSON is
/// "Invalid JSON", a 400.
async fn bodies_are_json_whatever_the_content_type(b: Backend) {
    let t = Tollgate::start(b).await;
    let send = |method: reqwest::Method, path: &str, ct: Option<&str>, body: &str| {
        let mut req = t.request(method, path).body(body.to_string());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        t.send(req)
    };
    let mut ids = Vec::new();
    for (i, ct) in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!(r#"{{"model_name": "m{i}"}}"#);
        let a = send(reqwest::Method::POST, CONFIGS, ct, &body).await;
        assert_eq!(a.status, 200, "{ct:?}: {}", a.body);
        ids.push(a.body["model_config"]["id"].as_str().unwrap().to_string());
    }
    let a = send(
        reqwest::Method::PUT,
        &path(&ids[0]),
        Some("text/plain"),
        r#"{"model_name": "renamed"}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["model_config"]["model_name"], "renamed");
    for (body, needle) in [
        ("model_name=m", "JSON object"),
        (r#"["m"]"#, "JSON object"),
        (r#"{"model_name": "#, "invalid JSON"),
        ("", "empty"),
    ] {
        let a = send(reqwest::Method::POST, CONFIGS, Some("text/plain"), body).await;
        assert_eq!(a.status, 400, "{body:?}: {}", a.body);
        assert!(a.message().contains(needle), "{body:?}: {}", a.message());
    }
}

/// governance.go `createModelConfig`: `if req.Scope == "" { req.Scope = global }`, and a
/// global config's scope_id is dropped (also tables/modelconfig.go `BeforeSave`).
async fn create_with_empty_scope_is_global(b: Backend) {
    let t = Tollgate::start(b).await;
    let a = t
        .post(
            CONFIGS,
            &json!({"model_name": "m", "scope": "", "scope_id": "ignored"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["model_config"]["scope"], "global");
    assert_eq!(a.body["model_config"]["scope_id"], Value::Null);
    // Same identity as an explicit global one.
    let a = t
        .post(CONFIGS, &json!({"model_name": "m", "scope": "global"}))
        .await;
    assert_eq!(a.status, 409, "{}", a.body);
}

/// tables/utils.go `ParseDuration`: `switch strings.ToLower(duration)` maps
/// daily|weekly|monthly|yearly in any case; units stay case-sensitive (`m` ≠ `M`).
async fn duration_words_in_any_letter_case(b: Backend) {
    let t = Tollgate::start(b).await;
    let a = t
        .post(
            CONFIGS,
            &json!({"model_name": "m",
                "budgets": [{"max_limit": 1, "reset_duration": "DAILY"},
                            {"max_limit": 2, "reset_duration": "Monthly"}],
                "rate_limit": {"request_max_limit": 1, "request_reset_duration": "Weekly"}}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["model_config"]["budgets"][0]["reset_duration"],
        "DAILY"
    );
    let a = t.check(json!({"model": "m"})).await;
    assert_eq!(a.status, 200);
    let week_ms = 7 * 86_400_000;
    let reset = a.body["limits"][0]["reset_after_ms"].as_i64().unwrap();
    assert!(
        (week_ms - 60_000..=week_ms).contains(&reset),
        "`Weekly` is 7 days: {}",
        a.body
    );
    // `daily` and `1d` are one duration.
    let a = t
        .post(
            CONFIGS,
            &json!({"model_name": "n", "budgets": [{"max_limit": 1, "reset_duration": "Daily"},
                                                   {"max_limit": 1, "reset_duration": "1d"}]}),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.message().contains("budgets[1].reset_duration"));
}

/// handlers/utils.go `SendError` writes a `schemas.BifrostError`, whose `extra_fields`
/// Bifrost's own API contract tests expect.
async fn errors_carry_extra_fields(b: Backend) {
    let t = Tollgate::start(b).await;
    let answers = [
        t.get(&path("nope")).await,
        t.post(CONFIGS, &json!({})).await,
        t.get(&format!("{CONFIGS}?limit=-1")).await,
        t.get("/api/unknown").await,
    ];
    for a in answers {
        assert!(a.status.is_client_error(), "{}", a.body);
        assert!(!a.message().is_empty());
        assert_eq!(a.body["extra_fields"], json!({}), "{}", a.body);
    }
}

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

/// governance.go `reconcileModelConfigBudgets` → `inheritUsageFromClosestShorterBudget`:
/// a budget created by an update starts with the `CurrentUsage` of the config's closest
/// shorter budget as it was before the update (`mc.Budgets`); none shorter: 0.
async fn new_budget_starts_with_closest_shorter_budgets_usage(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "budgets": [{"max_limit": 100, "reset_duration": "1d"}]}))
        .await;
    let spend = |cost: f64| t.check(json!({"model": "m", "cost": cost}));
    assert_eq!(spend(2.0).await.status, 200);
    // 1h: nothing shorter, starts at 0.
    let a = t
        .put(
            &path(&id),
            &json!({"budgets": [
            {"max_limit": 100, "reset_duration": "1d"},
            {"max_limit": 100, "reset_duration": "1h"}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(budget(&a.body["model_config"], "1h")["current_usage"], 0.0);
    assert_eq!(spend(1.0).await.status, 200);
    // Now 1d = 3, 1h = 1. A weekly budget starts from the daily (closest shorter), not
    // the hourly; it counts from there: 3 of 3.5 leaves no room for 1 more.
    let a = t
        .put(
            &path(&id),
            &json!({"budgets": [
            {"max_limit": 100, "reset_duration": "1d"},
            {"max_limit": 100, "reset_duration": "1h"},
            {"max_limit": 3.5, "reset_duration": "1w"}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let config = &a.body["model_config"];
    assert_eq!(budget(config, "1w")["current_usage"], 3.0);
    assert_eq!(budget(config, "1d")["current_usage"], 3.0);
    assert_eq!(budget(config, "1h")["current_usage"], 1.0);
    let denied = spend(1.0).await;
    assert_eq!(denied.status, 429, "{}", denied.body);
    assert_eq!(denied.body["reason"], "budget_exceeded");
    assert_eq!(budget(&t.config(&id).await, "1w")["current_usage"], 3.0);
    // A source this update removes still seeds (its usage as it was), and a budget
    // matched by duration keeps its own usage.
    let a = t
        .put(
            &path(&id),
            &json!({"budgets": [
            {"max_limit": 100, "reset_duration": "1h"},
            {"max_limit": 100, "reset_duration": "2d"}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let config = &a.body["model_config"];
    assert_eq!(
        budget(config, "2d")["current_usage"],
        3.0,
        "from the removed 1d"
    );
    assert_eq!(budget(config, "1h")["current_usage"], 1.0);
    assert_eq!(config["budgets"].as_array().unwrap().len(), 2);
}

/// governance.go `coerceLegacyBudget`: the legacy `budget` object merges its given fields
/// over the first budget (keeping its id, so its usage), or creates the budget when both
/// fields are given, and a body with neither field (`{}`) removes it; creating one with a
/// field missing is a 400 ("both max_limit and reset_duration are required"). Bifrost then
/// replaces the whole set with that one budget (and refuses the legacy form on a config
/// with several); tollgate keeps the other budgets, which a single-budget client cannot
/// know about.
async fn legacy_budget_on_put_updates_the_first_budget_or_creates_it(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "budget": {"max_limit": 10, "reset_duration": "1d"}}))
        .await;
    assert_eq!(t.check(json!({"model": "m", "cost": 4})).await.status, 200);
    let first = t.config(&id).await["budgets"][0]["id"].clone();
    let a = t
        .put(&path(&id), &json!({"budget": {"max_limit": 120}}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let config = &a.body["model_config"];
    assert_eq!(config["budgets"].as_array().unwrap().len(), 1);
    assert_eq!(config["budgets"][0]["id"], first);
    assert_eq!(config["budgets"][0]["max_limit"], 120.0);
    assert_eq!(config["budgets"][0]["reset_duration"], "1d");
    assert_eq!(config["budgets"][0]["current_usage"], 4.0);
    assert_eq!(
        config["budget"]["max_limit"], 120.0,
        "the legacy view follows"
    );

    let bare = t.create(json!({"model_name": "n"})).await;
    let a = t
        .put(&path(&bare), &json!({"budget": {"max_limit": 120}}))
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.message().contains("budget.reset_duration is required"));
    let a = t
        .put(
            &path(&bare),
            &json!({"budget": {"max_limit": 120, "reset_duration": "monthly"}}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["model_config"]["budgets"][0]["max_limit"], 120.0);
    let a = t.put(&path(&bare), &json!({"budget": {}})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["model_config"]["budgets"], json!([]));
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

/// Bifrost validates rate limits and budgets inside its transaction
/// (governance.go `validateRateLimit`/`validateBudget` in `ExecuteTransaction`) and
/// answers every such failure with `SendError(ctx, 500, …)`; its BeforeSave hooks
/// (tables/ratelimit.go, tables/modelconfig.go) likewise. tollgate answers 400, naming
/// the field.
async fn bad_input_bifrost_answers_500_for_is_a_4xx_here(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t.create(json!({"model_name": "m"})).await;
    let creates = [
        (
            json!({"model_name": "m2", "rate_limit": {"token_max_limit": 0, "token_reset_duration": "1m"}}),
            "token_max_limit",
        ),
        (
            json!({"model_name": "m2", "rate_limit": {"request_max_limit": 5}}),
            "request_reset_duration",
        ),
        (
            json!({"model_name": "m2", "rate_limit": {"request_max_limit": 5, "request_reset_duration": "soon"}}),
            "request_reset_duration",
        ),
    ];
    for (body, needle) in creates {
        let a = t.post(CONFIGS, &body).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(a.message().contains(needle), "{body}: {}", a.message());
    }
    let updates = [
        (json!({"provider": " openai"}), "provider"),
        (json!({"model_name": ""}), "model_name"),
        (
            json!({"budgets": [{"max_limit": -1, "reset_duration": "1d"}]}),
            "budgets[0].max_limit",
        ),
        (
            json!({"rate_limit": {"request_max_limit": 1, "request_reset_duration": "0s"}}),
            "request_reset_duration",
        ),
    ];
    for (body, needle) in updates {
        let a = t.put(&path(&id), &body).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(a.message().contains(needle), "{body}: {}", a.message());
    }
    assert_eq!(
        t.config(&id).await["model_name"],
        "m",
        "refused updates change nothing"
    );
}
