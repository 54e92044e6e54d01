//! `/v1/check` decisions: which configs match a request, request, token and budget
//! limits, all-or-nothing consumption across configs, and dry runs.

use super::limited;
use crate::common::{self, Backend, Tollgate};
use serde_json::{Value, json};

on_every_store!(
    no_matching_config_allows,
    request_limit_denies_without_consuming,
    check_is_all_or_nothing_across_configs,
    dry_run_consumes_nothing,
    exhausted_tokens_deny_even_zero_token_requests,
    budgets_count_exact_cents,
    matching_follows_scope_model_and_provider,
);

async fn no_matching_config_allows(b: Backend) {
    let t = Tollgate::start(b).await;
    t.create(json!({"model_name": "other", "rate_limit": limited(1, "1h")}))
        .await;
    for _ in 0..3 {
        let a = t.check(json!({"model": "gpt-4o"})).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body["allowed"], true);
        assert_eq!(a.body["reason"], Value::Null);
        assert_eq!(a.body["limits"], json!([]));
    }
}

async fn request_limit_denies_without_consuming(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "gpt-4o", "rate_limit": limited(3, "1h")}))
        .await;
    for n in 1..=3 {
        let a = t.check(json!({"model": "gpt-4o"})).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let l = &a.body["limits"][0];
        assert_eq!(
            (
                l["kind"].as_str(),
                l["used"].as_i64(),
                l["remaining"].as_i64()
            ),
            (Some("requests"), Some(n), Some(3 - n))
        );
        assert_eq!(l["config_id"], id.as_str());
        assert_eq!(l["scope"], "global");
        assert_eq!(l["reset_duration"], "1h");
        assert_eq!(
            a.header("ratelimit-policy"),
            Some("\"requests\";q=3;w=3600")
        );
        assert!(
            a.header("ratelimit")
                .unwrap()
                .starts_with(&format!("\"requests\";r={};t=", 3 - n))
        );
    }
    for _ in 0..3 {
        let a = t.check(json!({"model": "gpt-4o"})).await;
        assert_eq!(a.status, 429);
        assert_eq!(a.body["allowed"], false);
        assert_eq!(a.body["reason"], "request_limited");
        let retry = a.body["retry_after_ms"].as_i64().unwrap();
        assert!(retry > 3_590_000 && retry <= 3_600_000, "{retry}");
        let header: i64 = a.header("retry-after").unwrap().parse().unwrap();
        assert_eq!(header, (retry + 999) / 1000);
        assert_eq!(
            a.body["limits"][0]["used"], 3,
            "a denied request consumes nothing"
        );
        assert!(a.header("ratelimit").unwrap().contains("r=0"));
    }
    assert_eq!(
        t.config(&id).await["rate_limit"]["request_current_usage"],
        3
    );
    // Asking for more than fits is denied even with room left.
    let t2 = Tollgate::start(b).await;
    t2.create(json!({"model_name": "m", "rate_limit": limited(5, "1h")}))
        .await;
    assert_eq!(
        t2.check(json!({"model": "m", "requests": 6})).await.status,
        429
    );
    assert_eq!(
        t2.check(json!({"model": "m", "requests": 5})).await.status,
        200
    );
}

async fn check_is_all_or_nothing_across_configs(b: Backend) {
    let t = Tollgate::start(b).await;
    let global = t
        .create(json!({"model_name": "*", "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1h"}}))
        .await;
    let vk = t
        .create(json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "vk-1", "rate_limit": limited(10, "1h"),
                       "budgets": [{"max_limit": 1.0, "reset_duration": "1d"}]}))
        .await;
    let req = |tokens: u64, cost: f64| json!({"model": "gpt-4o", "virtual_key": "vk-1", "tokens": tokens, "cost": cost});
    assert_eq!(t.check(req(900, 0.5)).await.status, 200);
    // Tokens would pass the vk config but not the global one: nothing is consumed anywhere.
    let a = t.check(req(200, 0.1)).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["reason"], "token_limited");
    let kinds: Vec<&str> = a.body["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["tokens", "requests", "budget"]);
    let vk_config = t.config(&vk).await;
    assert_eq!(vk_config["rate_limit"]["request_current_usage"], 1);
    assert_eq!(vk_config["budgets"][0]["current_usage"], 0.5);
    assert_eq!(
        t.config(&global).await["rate_limit"]["token_current_usage"],
        900
    );
    // Budget is the blocker now.
    let a = t.check(req(50, 0.6)).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["reason"], "budget_exceeded");
    assert_eq!(
        t.config(&global).await["rate_limit"]["token_current_usage"],
        900
    );
    assert_eq!(t.check(req(100, 0.5)).await.status, 200);
    assert_eq!(
        t.config(&global).await["rate_limit"]["token_current_usage"],
        1000
    );
    assert_eq!(t.config(&vk).await["budgets"][0]["current_usage"], 1.0);
}

async fn dry_run_consumes_nothing(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "rate_limit": limited(1, "1h")}))
        .await;
    for _ in 0..3 {
        let a = t.check(json!({"model": "m", "dry_run": true})).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body["limits"][0]["used"], 0);
    }
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    let a = t.check(json!({"model": "m", "dry_run": true})).await;
    assert_eq!(a.status, 429, "dry runs tell the truth");
    assert_eq!(a.body["reason"], "request_limited");
    assert_eq!(
        t.config(&id).await["rate_limit"]["request_current_usage"],
        1
    );
}

async fn exhausted_tokens_deny_even_zero_token_requests(b: Backend) {
    let t = Tollgate::start(b).await;
    t.create(json!({"model_name": "m", "rate_limit": {"token_max_limit": 100, "token_reset_duration": "1h"}})).await;
    assert_eq!(
        t.check(json!({"model": "m", "tokens": 60})).await.status,
        200
    );
    assert_eq!(
        t.check(json!({"model": "m", "tokens": 41})).await.status,
        429
    );
    assert_eq!(
        t.check(json!({"model": "m", "tokens": 0})).await.status,
        200,
        "room left admits a zero estimate"
    );
    assert_eq!(
        t.check(json!({"model": "m", "tokens": 40})).await.status,
        200
    );
    let a = t.check(json!({"model": "m", "tokens": 0})).await;
    assert_eq!(a.status, 429, "a full window admits nothing");
    assert_eq!(a.body["reason"], "token_limited");
}

async fn budgets_count_exact_cents(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "budgets": [{"max_limit": 0.3, "reset_duration": "1d"}]}))
        .await;
    assert_eq!(
        t.check(json!({"model": "m", "cost": 0.1})).await.status,
        200
    );
    assert_eq!(
        t.check(json!({"model": "m", "cost": 0.2})).await.status,
        200,
        "0.1 + 0.2 fits 0.3 exactly"
    );
    let a = t.check(json!({"model": "m"})).await;
    assert_eq!(
        a.status, 429,
        "an exhausted budget blocks even free requests"
    );
    assert_eq!(a.body["reason"], "budget_exceeded");
    assert_eq!(a.body["limits"][0]["used"], 0.3);
    assert_eq!(a.body["limits"][0]["remaining"], 0.0);
    assert_eq!(t.config(&id).await["budgets"][0]["current_usage"], 0.3);
    // A zero budget blocks everything.
    t.create(json!({"model_name": "free", "budgets": [{"max_limit": 0, "reset_duration": "1d"}]}))
        .await;
    assert_eq!(t.check(json!({"model": "free"})).await.status, 429);
}

async fn matching_follows_scope_model_and_provider(b: Backend) {
    let t = Tollgate::start(b).await;
    let one = |m: &str, extra: Value| {
        let mut body = json!({"model_name": m, "rate_limit": limited(1, "1h")});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    t.create(one("gpt-4o", json!({"provider": "openai"}))).await;
    t.create(one(
        "*",
        json!({"scope": "virtual_key", "scope_id": "vk-1"}),
    ))
    .await;
    t.create(one("claude", json!({"scope": "user", "scope_id": "u-1"})))
        .await;

    let ids = |a: &common::Answer| a.body["limits"].as_array().unwrap().len();
    // Provider-specific config applies only to that provider.
    assert_eq!(
        ids(&t
            .check(json!({"model": "gpt-4o", "provider": "azure"}))
            .await),
        0
    );
    assert_eq!(ids(&t.check(json!({"model": "gpt-4o"})).await), 0);
    assert_eq!(
        t.check(json!({"model": "gpt-4o", "provider": "openai"}))
            .await
            .status,
        200
    );
    assert_eq!(
        t.check(json!({"model": "gpt-4o", "provider": "openai"}))
            .await
            .status,
        429
    );
    // Virtual-key config applies to any model, only for that key.
    assert_eq!(
        ids(&t.check(json!({"model": "x", "virtual_key": "vk-2"})).await),
        0
    );
    assert_eq!(
        t.check(json!({"model": "x", "virtual_key": "vk-1"}))
            .await
            .status,
        200
    );
    assert_eq!(
        t.check(json!({"model": "y", "virtual_key": "vk-1"}))
            .await
            .status,
        429
    );
    // User config: exact model, that user only; a virtual key named like the user does not match.
    assert_eq!(
        ids(&t
            .check(json!({"model": "claude", "virtual_key": "u-1"}))
            .await),
        0
    );
    assert_eq!(
        ids(&t.check(json!({"model": "claude-2", "user": "u-1"})).await),
        0
    );
    assert_eq!(
        t.check(json!({"model": "claude", "user": "u-1"}))
            .await
            .status,
        200
    );
    let a = t
        .check(json!({"model": "claude", "user": "u-1", "virtual_key": "vk-1"}))
        .await;
    assert_eq!(a.status, 429);
    assert_eq!(ids(&a), 2);
    assert_eq!(a.body["limits"][1]["scope"], "user");
    assert_eq!(a.body["limits"][1]["scope_id"], "u-1");
}
