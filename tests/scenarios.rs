//! The behaviour suite: every scenario runs against the memory store and against a real
//! Redis (started by the test), through the HTTP API.

#[macro_use]
mod common;

use common::{Backend, Tollgate};
use serde_json::{Value, json};
use std::time::Duration;

const CONFIGS: &str = "/api/governance/model-configs";

on_every_store!(
    create_get_and_shape,
    create_rejects_invalid_input,
    duplicate_identity_is_a_conflict,
    legacy_budget_is_accepted,
    update_replaces_and_keeps_usage,
    update_rejects_identity_changes_and_unknown_ids,
    delete_removes_config_and_counters,
    list_filters_paginates_and_orders,
    api_keys_guard_the_management_api,
    no_matching_config_allows,
    request_limit_denies_without_consuming,
    check_is_all_or_nothing_across_configs,
    dry_run_consumes_nothing,
    exhausted_tokens_deny_even_zero_token_requests,
    budgets_count_exact_cents,
    matching_follows_scope_model_and_provider,
    sliding_window_returns_capacity,
    budget_period_resets,
    usage_settles_refunds_and_is_idempotent,
    usage_request_ids_are_scoped_by_identity,
    late_refunds_return_only_what_their_reservation_holds,
    usage_reports_saturate_and_leave_nothing_behind,
    management_shows_live_usage,
    from_memory_lists_usage_as_last_seen,
    config_changes_apply_to_checks_at_once,
    lengthened_limits_keep_usage_past_the_old_expiry,
    bad_check_and_usage_input_is_a_clear_400,
    unknown_paths_and_methods,
);

fn limited(requests: u64, window: &str) -> Value {
    json!({"request_max_limit": requests, "request_reset_duration": window})
}

async fn create_get_and_shape(b: Backend) {
    let t = Tollgate::start(b).await;
    let a = t
        .post(CONFIGS, &json!({
            "model_name": "gpt-4o", "provider": "openai", "scope": "virtual_key", "scope_id": "vk-1",
            "budgets": [{"max_limit": 10.5, "reset_duration": "1d"}, {"max_limit": 100, "reset_duration": "monthly"}],
            "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1h", "request_max_limit": 10, "request_reset_duration": "1m"},
            "calendar_aligned": true,
        }))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body["message"].as_str().unwrap().len() > 3);
    let c = &a.body["model_config"];
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["model_name"], "gpt-4o");
    assert_eq!(c["provider"], "openai");
    assert_eq!(c["scope"], "virtual_key");
    assert_eq!(c["scope_id"], "vk-1");
    assert_eq!(c["calendar_aligned"], true);
    assert_eq!(c["budgets"].as_array().unwrap().len(), 2);
    assert_eq!(c["budgets"][0]["max_limit"], 10.5);
    assert_eq!(c["budgets"][0]["current_usage"], 0.0);
    assert_eq!(
        c["budget"], c["budgets"][0],
        "legacy budget field mirrors the first budget"
    );
    assert_eq!(c["rate_limit"]["token_max_limit"], 1000);
    assert_eq!(c["rate_limit"]["request_reset_duration"], "1m");
    assert_eq!(c["rate_limit"]["request_current_usage"], 0);
    for field in ["created_at", "updated_at"] {
        assert!(chrono::DateTime::parse_from_rfc3339(c[field].as_str().unwrap()).is_ok());
    }
    // Calendar-aligned daily budget: the period starts at UTC midnight.
    let last_reset = c["budgets"][0]["last_reset"].as_str().unwrap();
    assert!(last_reset.ends_with("T00:00:00Z"), "{last_reset}");

    let got = t.config(id).await;
    assert_eq!(got["id"], id);
    assert_eq!(got["budgets"], c["budgets"]);

    let other = t.create(json!({"model_name": "*"})).await;
    assert_ne!(other, id, "ids are unique");
    let missing = t.get(&format!("{CONFIGS}/does-not-exist")).await;
    assert_eq!(missing.status, 404);
    assert!(missing.message().contains("does-not-exist"));
}

async fn create_rejects_invalid_input(b: Backend) {
    let t = Tollgate::start(b).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "model_name"),
        (json!({"model_name": ""}), "model_name"),
        (json!({"model_name": 5}), "model_name"),
        (json!({"model_name": "m", "provider": ""}), "provider"),
        (
            json!({"model_name": "m", "scope": "team", "scope_id": "x"}),
            "scope",
        ),
        (
            json!({"model_name": "m", "scope": "virtual_key"}),
            "scope_id",
        ),
        (
            json!({"model_name": "m", "scope": "user", "scope_id": ""}),
            "scope_id",
        ),
        (
            json!({"model_name": "m", "budgets": [{"max_limit": -1, "reset_duration": "1d"}]}),
            "max_limit",
        ),
        (
            json!({"model_name": "m", "budgets": [{"max_limit": "lots", "reset_duration": "1d"}]}),
            "max_limit",
        ),
        (
            json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "0s"}]}),
            "reset_duration",
        ),
        (
            json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "-1h"}]}),
            "reset_duration",
        ),
        (
            json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "fortnight"}]}),
            "reset_duration",
        ),
        (
            json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "1d"}, {"max_limit": 2, "reset_duration": "1d"}]}),
            "reset_duration",
        ),
        (
            json!({"model_name": "m", "budgets": {"max_limit": 1}}),
            "budgets",
        ),
        (
            json!({"model_name": "m", "rate_limit": {"token_max_limit": 0, "token_reset_duration": "1m"}}),
            "token_max_limit",
        ),
        (
            json!({"model_name": "m", "rate_limit": {"token_max_limit": -5, "token_reset_duration": "1m"}}),
            "token_max_limit",
        ),
        (
            json!({"model_name": "m", "rate_limit": {"request_max_limit": 1.5, "request_reset_duration": "1m"}}),
            "request_max_limit",
        ),
        (
            json!({"model_name": "m", "rate_limit": {"request_max_limit": 5}}),
            "request_reset_duration",
        ),
        (
            json!({"model_name": "m", "rate_limit": {"request_max_limit": 5, "request_reset_duration": "0m"}}),
            "request_reset_duration",
        ),
        (
            json!({"model_name": "m", "calendar_aligned": "yes"}),
            "calendar_aligned",
        ),
        (json!([1, 2]), "JSON object"),
    ];
    for (body, needle) in cases {
        let a = t.post(CONFIGS, &body).await;
        assert_eq!(a.status, 400, "{body} -> {}", a.body);
        assert!(
            a.message().contains(needle),
            "{body}: message {:?} should mention {needle}",
            a.message()
        );
    }
    // Malformed JSON is a 400 too, never a 500.
    let raw = t
        .send(
            t.request(reqwest::Method::POST, CONFIGS)
                .header("content-type", "application/json")
                .body("{\"model_name\": "),
        )
        .await;
    assert_eq!(raw.status, 400);
    assert!(raw.message().contains("JSON"));
    // Nothing was created by any of them.
    let list = t.get(CONFIGS).await;
    assert_eq!(list.body["total_count"], 0);
}

async fn duplicate_identity_is_a_conflict(b: Backend) {
    let t = Tollgate::start(b).await;
    t.create(json!({"model_name": "gpt-4o"})).await;
    let dup = t
        .post(CONFIGS, &json!({"model_name": "gpt-4o", "scope": "global"}))
        .await;
    assert_eq!(dup.status, 409, "{}", dup.body);
    assert!(dup.message().contains("already exists"));
    // Global scope ignores scope_id, so this is the same identity.
    let dup = t
        .post(CONFIGS, &json!({"model_name": "gpt-4o", "scope_id": "x"}))
        .await;
    assert_eq!(dup.status, 409);
    // Any other part of the identity makes a different config.
    t.create(json!({"model_name": "gpt-4o", "provider": "openai"}))
        .await;
    t.create(json!({"model_name": "gpt-4o", "scope": "user", "scope_id": "u1"}))
        .await;
    t.create(json!({"model_name": "gpt-4o", "scope": "user", "scope_id": "u2"}))
        .await;
    t.create(json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "u1"}))
        .await;
    let dup = t
        .post(
            CONFIGS,
            &json!({"model_name": "gpt-4o", "scope": "user", "scope_id": "u1"}),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(t.get(CONFIGS).await.body["total_count"], 5);
}

async fn legacy_budget_is_accepted(b: Backend) {
    let t = Tollgate::start(b).await;
    let a = t
        .post(
            CONFIGS,
            &json!({"model_name": "m", "budget": {"max_limit": 2.5, "reset_duration": "1w"}}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let c = &a.body["model_config"];
    assert_eq!(c["budgets"].as_array().unwrap().len(), 1);
    assert_eq!(c["budgets"][0]["max_limit"], 2.5);
    assert_eq!(c["budget"]["reset_duration"], "1w");
}

async fn update_replaces_and_keeps_usage(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "budgets": [{"max_limit": 10, "reset_duration": "1d"}, {"max_limit": 20, "reset_duration": "1w"}],
                       "rate_limit": limited(100, "1h")}))
        .await;
    assert_eq!(
        t.check(json!({"model": "m", "cost": 1.25})).await.status,
        200
    );
    let before = t.config(&id).await;
    let daily = before["budgets"][0]["id"].as_str().unwrap().to_string();
    let weekly = before["budgets"][1]["id"].as_str().unwrap().to_string();
    let path = format!("{CONFIGS}/{id}");

    // Omitted budgets stay; model name changes.
    let a = t.put(&path, &json!({"model_name": "m2"})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body["message"].is_string());
    assert_eq!(a.body["model_config"]["model_name"], "m2");
    assert_eq!(
        a.body["model_config"]["budgets"].as_array().unwrap().len(),
        2
    );

    // Entries matched by id or by duration keep their usage; a new one starts at zero.
    let a = t
        .put(
            &path,
            &json!({"budgets": [
            {"id": weekly, "max_limit": 30, "reset_duration": "1w"},
            {"max_limit": 15, "reset_duration": "24h"},
            {"max_limit": 5, "reset_duration": "1h"}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let budgets = a.body["model_config"]["budgets"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(budgets[0]["id"], weekly.as_str());
    assert_eq!(budgets[0]["max_limit"], 30.0);
    assert_eq!(budgets[0]["current_usage"], 1.25);
    assert_eq!(
        budgets[1]["id"],
        daily.as_str(),
        "matched by duration (24h = 1d)"
    );
    assert_eq!(budgets[1]["current_usage"], 1.25);
    assert_eq!(budgets[2]["current_usage"], 0.0);

    // The rate limit is replaced as a whole, counters kept.
    let a = t
        .put(
            &path,
            &json!({"rate_limit": {"request_max_limit": 50, "request_reset_duration": "1h"}}),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body["model_config"]["rate_limit"]["request_max_limit"],
        50
    );
    assert_eq!(
        a.body["model_config"]["rate_limit"]["request_current_usage"],
        1
    );
    assert_eq!(
        a.body["model_config"]["rate_limit"]["token_max_limit"],
        Value::Null
    );

    // Both maxes null removes it; [] removes every budget.
    let a = t.put(&path, &json!({"rate_limit": {"request_max_limit": null, "token_max_limit": null}, "budgets": []})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["model_config"]["rate_limit"], Value::Null);
    assert_eq!(a.body["model_config"]["budgets"], json!([]));
    assert_eq!(t.config(&id).await["budgets"], json!([]));

    // Invalid updates change nothing.
    let a = t
        .put(
            &path,
            &json!({"budgets": [{"max_limit": -1, "reset_duration": "1d"}]}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(t.config(&id).await["model_name"], "m2");
}

async fn update_rejects_identity_changes_and_unknown_ids(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "scope": "user", "scope_id": "u1"}))
        .await;
    let other = t
        .create(json!({"model_name": "n", "scope": "user", "scope_id": "u1"}))
        .await;
    let path = format!("{CONFIGS}/{id}");
    let a = t.put(&path, &json!({"scope": "global"})).await;
    assert_eq!(a.status, 400);
    assert!(a.message().contains("scope"));
    let a = t.put(&path, &json!({"scope_id": "u2"})).await;
    assert_eq!(a.status, 400);
    assert!(a.message().contains("scope_id"));
    // Restating the same identity is fine.
    assert_eq!(
        t.put(&path, &json!({"scope": "user", "scope_id": "u1"}))
            .await
            .status,
        200
    );
    // Renaming onto another config's identity is a conflict.
    let a = t.put(&path, &json!({"model_name": "n"})).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(t.config(&other).await["model_name"], "n");
    assert_eq!(t.config(&id).await["model_name"], "m");
    let a = t
        .put(&format!("{CONFIGS}/nope"), &json!({"model_name": "x"}))
        .await;
    assert_eq!(a.status, 404);
    let a = t
        .put(
            &path,
            &json!({"budgets": [{"id": "not-a-budget", "max_limit": 1, "reset_duration": "1d"}]}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.message().contains("not-a-budget"));
    // A JSON array is not an update, even one serde could read by position.
    let a = t
        .put(
            &path,
            &json!(["renamed", null, null, null, null, null, null, null]),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.message().contains("JSON object"), "{}", a.body);
    assert_eq!(t.config(&id).await["model_name"], "m");
    // A malformed id is a 400 in the error shape, on every method.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let a = t
            .send(
                t.request(method.clone(), &format!("{CONFIGS}/%FF"))
                    .json(&json!({})),
            )
            .await;
        assert_eq!(a.status, 400, "{method}");
        assert_eq!(a.body["status_code"], 400, "{method}: {}", a.body);
        assert!(a.message().contains("id"), "{method}: {}", a.body);
    }
}

async fn delete_removes_config_and_counters(b: Backend) {
    let t = Tollgate::start(b).await;
    let body = json!({"model_name": "m", "rate_limit": limited(2, "1h")});
    let id = t.create(body.clone()).await;
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(t.check(json!({"model": "m"})).await.status, 429);
    let a = t.delete(&format!("{CONFIGS}/{id}")).await;
    assert_eq!(a.status, 200);
    assert!(a.body["message"].is_string());
    assert_eq!(t.get(&format!("{CONFIGS}/{id}")).await.status, 404);
    assert_eq!(t.delete(&format!("{CONFIGS}/{id}")).await.status, 404);
    // With the config gone, checks are unlimited again.
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    // A new config with the same identity starts from zero.
    let again = t.create(body).await;
    assert_eq!(
        t.config(&again).await["rate_limit"]["request_current_usage"],
        0
    );
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    if let Some(redis) = &t.redis {
        let exists: i64 = redis.cmd(&["EXISTS", &format!("tollgate:c:{id}")]);
        assert_eq!(
            exists, 0,
            "the deleted config's counters are gone from Redis"
        );
    }
}

async fn list_filters_paginates_and_orders(b: Backend) {
    let t = Tollgate::start(b).await;
    let mut ids = Vec::new();
    for (i, (model, scope, sid, provider)) in [
        ("gpt-4o", "global", None, None),
        ("GPT-4o-mini", "global", None, Some("openai")),
        ("claude-3", "user", Some("u1"), None),
        ("claude-3", "virtual_key", Some("vk1"), Some("anthropic")),
        ("*", "virtual_key", Some("vk1"), None),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"model_name": model, "scope": scope, "scope_id": sid});
        if let Some(p) = provider {
            body["provider"] = json!(p);
        }
        ids.push(t.create(body).await);
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let ids_of = |a: &common::Answer| -> Vec<String> {
        a.body["model_configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Newest first (created_at, then id, descending), as Bifrost and its UI list them.
    let rev = |range: std::ops::Range<usize>| -> Vec<String> {
        ids[range].iter().rev().cloned().collect()
    };
    let all = t.get(CONFIGS).await;
    assert_eq!(all.status, 200);
    assert_eq!(ids_of(&all), rev(0..5), "newest first");
    assert_eq!(
        (all.body["count"].as_u64(), all.body["total_count"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(
        (all.body["limit"].as_u64(), all.body["offset"].as_u64()),
        (Some(25), Some(0))
    );

    let page = t.get(&format!("{CONFIGS}?limit=2&offset=1")).await;
    assert_eq!(ids_of(&page), rev(2..4));
    assert_eq!(
        (
            page.body["count"].as_u64(),
            page.body["total_count"].as_u64()
        ),
        (Some(2), Some(5))
    );
    let past = t.get(&format!("{CONFIGS}?offset=10")).await;
    assert_eq!(
        (
            past.body["count"].as_u64(),
            past.body["total_count"].as_u64()
        ),
        (Some(0), Some(5))
    );

    let search = t.get(&format!("{CONFIGS}?search=gpt-4O")).await;
    assert_eq!(ids_of(&search), rev(0..2), "case-insensitive substring");
    assert_eq!(
        ids_of(&t.get(&format!("{CONFIGS}?scope=virtual_key")).await),
        rev(3..5)
    );
    assert_eq!(
        ids_of(&t.get(&format!("{CONFIGS}?scope=user&scope_id=u1")).await),
        rev(2..3)
    );
    assert_eq!(
        ids_of(
            &t.get(&format!("{CONFIGS}?scope_id=vk1&provider=anthropic"))
                .await
        ),
        rev(3..4)
    );
    let mem = t
        .get(&format!("{CONFIGS}?from_memory=true&search=claude"))
        .await;
    assert_eq!(mem.status, 200);
    assert_eq!(ids_of(&mem), rev(2..4));

    for bad in ["limit=x", "limit=-1", "offset=-1", "offset=1.5"] {
        let a = t.get(&format!("{CONFIGS}?{bad}")).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(!a.message().is_empty());
    }
    assert_eq!(t.get(&format!("{CONFIGS}?limit=100")).await.status, 200);
    // Bifrost's clamping: above 100 is 100, 0 is the default.
    for (query, limit) in [("limit=500", 100), ("limit=101", 100), ("limit=0", 25)] {
        let a = t.get(&format!("{CONFIGS}?{query}")).await;
        assert_eq!(
            (a.status.as_u16(), &a.body["limit"]),
            (200, &json!(limit)),
            "{query}"
        );
    }
    // A scope that names no scope matches nothing; only `true` selects memory.
    let a = t.get(&format!("{CONFIGS}?scope=team")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (a.body["count"].clone(), a.body["total_count"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(
        ids_of(&t.get(&format!("{CONFIGS}?from_memory=maybe")).await).len(),
        5
    );
}

async fn api_keys_guard_the_management_api(b: Backend) {
    let t = Tollgate::start_with(b, |s| s.api_keys = vec!["k1".into(), "k2".into()]).await;
    let anon = t.get(CONFIGS).await;
    assert_eq!(anon.status, 401);
    assert!(anon.message().contains("Bearer"));
    let wrong = t.clone().with_key("nope").get(CONFIGS).await;
    assert_eq!(wrong.status, 401);
    let x_api_key = t
        .send(
            t.request(reqwest::Method::GET, CONFIGS)
                .header("x-api-key", "k1"),
        )
        .await;
    assert_eq!(x_api_key.status, 401);
    let basic = t
        .send(
            t.request(reqwest::Method::GET, CONFIGS)
                .header("authorization", "Basic azE6"),
        )
        .await;
    assert_eq!(basic.status, 401);
    // Unknown /api paths are guarded too.
    for path in ["/api/unknown", "/api/", "/api"] {
        assert_eq!(t.get(path).await.status, 401, "{path}");
    }
    assert_eq!(t.clone().with_key("k1").get(CONFIGS).await.status, 200);
    assert_eq!(t.clone().with_key("k2").get(CONFIGS).await.status, 200);
    let created = t
        .clone()
        .with_key("k2")
        .post(CONFIGS, &json!({"model_name": "m"}))
        .await;
    assert_eq!(created.status, 200);
    let refused = t.post(CONFIGS, &json!({"model_name": "n"})).await;
    assert_eq!(refused.status, 401);
    // The hot path is for the local gateway and needs no key.
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
}

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

async fn sliding_window_returns_capacity(b: Backend) {
    let t = Tollgate::start(b).await;
    t.create(json!({"model_name": "m", "rate_limit": limited(3, "2s")}))
        .await;
    for _ in 0..3 {
        assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    }
    let denied = t.check(json!({"model": "m"})).await;
    assert_eq!(denied.status, 429);
    let retry = denied.body["retry_after_ms"].as_u64().unwrap();
    assert!(retry > 1000 && retry <= 2000, "{retry}");
    tokio::time::sleep(Duration::from_millis(retry + 50)).await;
    let mut admitted = 0;
    while t.check(json!({"model": "m"})).await.status == 200 {
        admitted += 1;
        assert!(admitted <= 3, "never more than the limit in one window");
    }
    assert!(admitted >= 1, "capacity came back after retry_after_ms");
}

async fn budget_period_resets(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "2s"}]}))
        .await;
    assert_eq!(t.check(json!({"model": "m", "cost": 1})).await.status, 200);
    let a = t.check(json!({"model": "m", "cost": 0.01})).await;
    assert_eq!(a.status, 429);
    let wait = a.body["retry_after_ms"].as_u64().unwrap();
    assert!(wait <= 2000);
    let before = t.config(&id).await["budgets"][0]["last_reset"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    let c = t.config(&id).await;
    assert_eq!(c["budgets"][0]["current_usage"], 0.0);
    assert_ne!(
        c["budgets"][0]["last_reset"].as_str().unwrap(),
        before,
        "a new period began"
    );
    assert_eq!(
        t.check(json!({"model": "m", "cost": 0.5})).await.status,
        200
    );
}

/// Reserve-and-settle across a boundary: a refund whose reservation was counted in an
/// earlier budget period, or has left the token window, must not come off the usage of
/// requests admitted since (that would let the limit be overshot). The check's
/// `reserved_at_ms`, passed back in the report, says where the reservation went.
async fn late_refunds_return_only_what_their_reservation_holds(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "rate_limit": {"token_max_limit": 10, "token_reset_duration": "1500ms"},
                       "budgets": [{"max_limit": 1, "reset_duration": "1500ms"}]}))
        .await;
    let first = t
        .check(json!({"model": "m", "tokens": 10, "cost": 1.0}))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let reserved_at = first.body["reserved_at_ms"]
        .as_i64()
        .expect("a consumed check says when");
    // Wait until the first reservation has left both the window and the period.
    let wait = first.body["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reset_after_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(wait + 60)).await;
    let second = t
        .check(json!({"model": "m", "tokens": 10, "cost": 1.0}))
        .await;
    assert_eq!(second.status, 200, "{}", second.body);
    // The first request settles late: it used nothing of its reservation.
    let late = json!({"model": "m", "tokens": 0, "reserved_tokens": 10, "cost": 0.0, "reserved_cost": 1.0,
                      "request_id": "late-1", "reserved_at_ms": reserved_at});
    let a = t.post("/v1/usage", &late).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let c = t.config(&id).await;
    assert_eq!(
        c["rate_limit"]["token_current_usage"], 10,
        "the second request's tokens stay: {c}"
    );
    assert_eq!(
        c["budgets"][0]["current_usage"], 1.0,
        "the second request's spend stays: {c}"
    );
    let third = t
        .check(json!({"model": "m", "tokens": 1, "cost": 0.01, "dry_run": true}))
        .await;
    assert_eq!(third.status, 429, "{}", third.body);
    // A timely refund with its reservation time still comes back in full.
    let refund = json!({"model": "m", "tokens": 4, "reserved_tokens": 10, "cost": 0.25, "reserved_cost": 1.0,
                        "request_id": "timely-2", "reserved_at_ms": second.body["reserved_at_ms"]});
    assert_eq!(t.post("/v1/usage", &refund).await.status, 200);
    let c = t.config(&id).await;
    assert_eq!(c["rate_limit"]["token_current_usage"], 4, "{c}");
    assert_eq!(c["budgets"][0]["current_usage"], 0.25, "{c}");
    // A dry run reserves nothing, so it says nothing about when; a bad time is a 400.
    assert!(third.body.get("reserved_at_ms").is_none());
    let a = t
        .post(
            "/v1/usage",
            &json!({"model": "m", "reserved_tokens": 1, "reserved_at_ms": -5}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.message().contains("reserved_at_ms"), "{}", a.body);
}

/// However much usage reports add, counters saturate (no overflow into negative usage
/// that would admit again), and a refund on counters that hold nothing stores nothing
/// (in Redis, a hash without a TTL would stay forever).
async fn usage_reports_saturate_and_leave_nothing_behind(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "rate_limit": {"token_max_limit": 100, "token_reset_duration": "1h"}}))
        .await;
    let refund = json!({"model": "m", "tokens": 0, "reserved_tokens": 50});
    assert_eq!(t.post("/v1/usage", &refund).await.status, 200);
    if let Some(r) = &t.redis {
        let keys: Vec<String> = r.cmd(&["KEYS", "*c:*"]);
        assert!(keys.is_empty(), "a refund of nothing stored {keys:?}");
    }
    let huge = json!({"model": "m", "tokens": (1u64 << 53) - 1});
    for _ in 0..1030 {
        assert_eq!(t.post("/v1/usage", &huge).await.status, 200);
    }
    let a = t.check(json!({"model": "m", "tokens": 50})).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(
        a.body["limits"][0]["used"],
        1u64 << 62,
        "saturated: {}",
        a.body
    );
    assert_eq!(
        t.config(&id).await["rate_limit"]["token_current_usage"],
        1u64 << 62
    );
    if let Some(r) = &t.redis {
        let key = format!("tollgate:c:{id}");
        let ttl: i64 = r.cmd(&["PTTL", &key]);
        assert!(ttl > 0, "counters expire when idle (PTTL {ttl})");
    }
}

async fn usage_settles_refunds_and_is_idempotent(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1h"},
                       "budgets": [{"max_limit": 1, "reset_duration": "1d"}]}))
        .await;
    assert_eq!(
        t.check(json!({"model": "m", "tokens": 800, "cost": 0.5}))
            .await
            .status,
        200
    );
    assert_eq!(
        t.check(json!({"model": "m", "tokens": 300})).await.status,
        429
    );
    // The call used less than reserved: the difference comes back.
    let report = json!({"model": "m", "tokens": 500, "reserved_tokens": 800, "cost": 0.2, "reserved_cost": 0.5, "request_id": "req-1"});
    for attempt in 0..5 {
        let a = t.post("/v1/usage", &report).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["duplicate"], attempt > 0);
    }
    let c = t.config(&id).await;
    assert_eq!(
        c["rate_limit"]["token_current_usage"], 500,
        "applied once, not five times"
    );
    assert_eq!(c["budgets"][0]["current_usage"], 0.2);
    assert_eq!(
        t.check(json!({"model": "m", "tokens": 300})).await.status,
        200
    );
    // Using more than reserved adds, and usage reports never deny (even past the limit).
    let a = t
        .post(
            "/v1/usage",
            &json!({"model": "m", "tokens": 900, "reserved_tokens": 0, "cost": 2.0}),
        )
        .await;
    assert_eq!(a.status, 200);
    let c = t.config(&id).await;
    assert_eq!(c["rate_limit"]["token_current_usage"], 1700);
    assert_eq!(c["budgets"][0]["current_usage"], 2.2);
    assert_eq!(t.check(json!({"model": "m"})).await.status, 429);
    // Refunds never push usage below zero.
    let a = t
        .post(
            "/v1/usage",
            &json!({"model": "m", "tokens": 0, "reserved_tokens": 100000, "reserved_cost": 100.0}),
        )
        .await;
    assert_eq!(a.status, 200);
    let c = t.config(&id).await;
    assert_eq!(c["rate_limit"]["token_current_usage"], 0);
    assert_eq!(c["budgets"][0]["current_usage"], 0.0);
    // No matching config is fine too.
    let a = t
        .post(
            "/v1/usage",
            &json!({"model": "unknown", "tokens": 5, "request_id": "req-2"}),
        )
        .await;
    assert_eq!(
        (a.status.as_u16(), a.body["matched_configs"].as_u64()),
        (200, Some(0))
    );
}

/// Two tenants' equal request ids never collide, and a report that matches no config
/// leaves no marker behind (its id is not taken).
async fn usage_request_ids_are_scoped_by_identity(b: Backend) {
    let t = Tollgate::start(b).await;
    let mut ids = Vec::new();
    for vk in ["vk-1", "vk-2"] {
        ids.push(
            t.create(
                json!({"model_name": "m", "scope": "virtual_key", "scope_id": vk,
                            "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1h"}}),
            )
            .await,
        );
    }
    let report = |vk: &str, user: Option<&str>| json!({"model": "m", "virtual_key": vk, "user": user, "tokens": 10, "request_id": "same"});
    for (vk, user, duplicate) in [
        ("vk-1", None, false),
        ("vk-2", None, false),
        ("vk-1", None, true),
        // Another user of vk-1 is another identity: its "same" is its own.
        ("vk-1", Some("u-9"), false),
        ("vk-1", Some("u-9"), true),
    ] {
        let a = t.post("/v1/usage", &report(vk, user)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["duplicate"], duplicate, "{vk} {user:?}: {}", a.body);
    }
    assert_eq!(
        t.config(&ids[0]).await["rate_limit"]["token_current_usage"],
        20
    );
    assert_eq!(
        t.config(&ids[1]).await["rate_limit"]["token_current_usage"],
        10
    );
    // vk-3 has no config yet: its report records nothing, not even its id...
    let a = t.post("/v1/usage", &report("vk-3", None)).await;
    assert_eq!(
        (a.status.as_u16(), a.body["duplicate"].clone()),
        (200, json!(false))
    );
    let id = t
        .create(
            json!({"model_name": "m", "scope": "virtual_key", "scope_id": "vk-3",
                        "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1h"}}),
        )
        .await;
    // ...so once a config matches, the same report is applied, not taken for a retry.
    let a = t.post("/v1/usage", &report("vk-3", None)).await;
    assert_eq!(a.body["duplicate"], false, "{}", a.body);
    assert_eq!(t.config(&id).await["rate_limit"]["token_current_usage"], 10);
}

async fn management_shows_live_usage(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 100, "request_reset_duration": "2s",
                       "token_max_limit": 10000, "token_reset_duration": "1h"}}))
        .await;
    for _ in 0..4 {
        t.check(json!({"model": "m", "tokens": 25})).await;
    }
    let c = t.config(&id).await;
    assert_eq!(c["rate_limit"]["request_current_usage"], 4);
    assert_eq!(c["rate_limit"]["token_current_usage"], 100);
    let list = t.get(CONFIGS).await;
    assert_eq!(
        list.body["model_configs"][0]["rate_limit"]["request_current_usage"],
        4
    );
    // The request window slides: the usage is gone once it is 2s old.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let c = t.config(&id).await;
    assert_eq!(c["rate_limit"]["request_current_usage"], 0);
    assert_eq!(c["rate_limit"]["token_current_usage"], 100);
    let last_reset = chrono::DateTime::parse_from_rfc3339(
        c["rate_limit"]["request_last_reset"].as_str().unwrap(),
    )
    .unwrap();
    let age = chrono::Utc::now()
        .signed_duration_since(last_reset)
        .num_milliseconds();
    assert!(
        (1500..3500).contains(&age),
        "the window started ~2s ago: {age}ms"
    );
}

/// Bifrost's UI reads every usage field of a list item unconditionally: `from_memory`
/// items carry them all, as this replica last saw them (no store call).
async fn from_memory_lists_usage_as_last_seen(b: Backend) {
    let t = Tollgate::start(b).await;
    t.create(json!({"model_name": "m",
        "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1h",
                       "token_max_limit": 1000, "token_reset_duration": "1h"},
        "budgets": [{"max_limit": 10, "reset_duration": "1d"}]}))
        .await;
    let listed = || async {
        let list = t.get(&format!("{CONFIGS}?from_memory=true")).await;
        assert_eq!(list.status, 200, "{}", list.body);
        list.body["model_configs"][0].clone()
    };
    let fresh = listed().await;
    for (path, value) in [
        ("/rate_limit/request_current_usage", json!(0)),
        ("/rate_limit/token_current_usage", json!(0)),
        ("/budgets/0/current_usage", json!(0.0)),
    ] {
        assert_eq!(fresh.pointer(path), Some(&value), "{path}: {fresh}");
    }
    for path in [
        "/rate_limit/request_last_reset",
        "/rate_limit/token_last_reset",
        "/budgets/0/last_reset",
    ] {
        assert!(
            fresh.pointer(path).is_some_and(|v| v.is_string()),
            "{path}: {fresh}"
        );
    }
    for _ in 0..2 {
        let a = t
            .check(json!({"model": "m", "tokens": 10, "cost": 0.5}))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let seen = listed().await;
    assert_eq!(seen["rate_limit"]["request_current_usage"], 2, "{seen}");
    assert_eq!(seen["rate_limit"]["token_current_usage"], 20, "{seen}");
    assert_eq!(seen["budgets"][0]["current_usage"], 1.0, "{seen}");
    assert!(seen["budgets"][0]["last_reset"].is_string(), "{seen}");
}

async fn config_changes_apply_to_checks_at_once(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "rate_limit": limited(2, "1h")}))
        .await;
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(t.check(json!({"model": "m"})).await.status, 429);
    // Raising the limit keeps the two already counted.
    let a = t
        .put(
            &format!("{CONFIGS}/{id}"),
            &json!({"rate_limit": limited(3, "1h")}),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(t.check(json!({"model": "m"})).await.status, 429);
    // A longer window keeps the usage too.
    t.put(
        &format!("{CONFIGS}/{id}"),
        &json!({"rate_limit": limited(3, "2h")}),
    )
    .await;
    let a = t.check(json!({"model": "m"})).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["limits"][0]["used"], 3);
    t.delete(&format!("{CONFIGS}/{id}")).await;
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
}

async fn lengthened_limits_keep_usage_past_the_old_expiry(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "rate_limit": limited(2, "1s"),
                       "budgets": [{"max_limit": 1.0, "reset_duration": "1s"}]}))
        .await;
    assert_eq!(
        t.check(json!({"model": "m", "cost": 0.6})).await.status,
        200
    );
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    let budget = t.config(&id).await["budgets"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Both limits get much longer; the usage already counted must stay counted.
    let a = t
        .put(
            &format!("{CONFIGS}/{id}"),
            &json!({"rate_limit": limited(2, "1h"),
             "budgets": [{"id": budget, "max_limit": 1.0, "reset_duration": "1d"}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Past the old limits' lifetime (1s window + a bucket + 1s, or the 1s period + 1s).
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let c = t.config(&id).await;
    assert_eq!(c["rate_limit"]["request_current_usage"], 2, "{c}");
    assert_eq!(c["budgets"][0]["current_usage"], 0.6, "{c}");
    let a = t.check(json!({"model": "m"})).await;
    assert_eq!(
        a.status, 429,
        "2 requests per hour already used: {}",
        a.body
    );
    assert_eq!(
        t.check(json!({"model": "m", "cost": 0.5, "requests": 0}))
            .await
            .status,
        429,
        "$0.6 + $0.5 > $1"
    );
}

async fn bad_check_and_usage_input_is_a_clear_400(b: Backend) {
    let t = Tollgate::start(b).await;
    t.create(json!({"model_name": "*", "rate_limit": limited(1000, "1h")}))
        .await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/check", json!({}), "model"),
        ("/v1/check", json!({"model": ""}), "model"),
        ("/v1/check", json!({"model": 7}), "model"),
        (
            "/v1/check",
            json!({"model": "m", "requests": -1}),
            "requests",
        ),
        ("/v1/check", json!({"model": "m", "tokens": 1.5}), "tokens"),
        ("/v1/check", json!({"model": "m", "tokens": "10"}), "tokens"),
        (
            "/v1/check",
            json!({"model": "m", "tokens": 18446744073709551615u64}),
            "tokens",
        ),
        ("/v1/check", json!({"model": "m", "cost": -0.01}), "cost"),
        ("/v1/check", json!({"model": "m", "cost": 1e300}), "cost"),
        (
            "/v1/check",
            json!({"model": "m", "dry_run": "yes"}),
            "dry_run",
        ),
        ("/v1/check", json!({"model": "m", "user": ["u"]}), "user"),
        ("/v1/usage", json!({"tokens": 1}), "model"),
        (
            "/v1/usage",
            json!({"model": "m", "reserved_tokens": -3}),
            "reserved_tokens",
        ),
        (
            "/v1/usage",
            json!({"model": "m", "reserved_cost": -3}),
            "reserved_cost",
        ),
        (
            "/v1/usage",
            json!({"model": "m", "request_id": ""}),
            "request_id",
        ),
        (
            "/v1/usage",
            json!({"model": "m", "request_id": 5}),
            "request_id",
        ),
    ];
    for (path, body, needle) in cases {
        let a = t.post(path, &body).await;
        assert_eq!(a.status, 400, "{path} {body}: {}", a.body);
        assert!(
            a.message().contains(needle),
            "{path} {body}: {:?} should mention {needle}",
            a.message()
        );
    }
    let raw = |ct: &'static str, body: &'static str| {
        t.request(reqwest::Method::POST, "/v1/check")
            .header("content-type", ct)
            .body(body)
    };
    let a = t.send(raw("application/json", "{\"model\": \"m\", ")).await;
    assert_eq!(a.status, 400);
    let a = t.send(raw("application/json", "")).await;
    assert_eq!(a.status, 400);
    assert!(a.message().contains("empty"));
    // /v1/* is tollgate's own API and keeps requiring JSON's content type (only the
    // Bifrost-compatible management API parses bodies whatever the header says).
    let a = t.send(raw("text/plain", "{\"model\": \"m\"}")).await;
    assert_eq!(a.status, 415);
    assert!(a.message().contains("application/json"));
    let huge = format!("{{\"model\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let a = t
        .send(
            t.request(reqwest::Method::POST, "/v1/check")
                .header("content-type", "application/json")
                .body(huge),
        )
        .await;
    assert_eq!(a.status, 413);
    // The rejected requests consumed nothing.
    let a = t.check(json!({"model": "m"})).await;
    assert_eq!(a.body["limits"][0]["used"], 1);
}

async fn unknown_paths_and_methods(b: Backend) {
    let t = Tollgate::start(b).await;
    let a = t.get("/v2/whatever").await;
    assert_eq!(a.status, 404);
    assert!(a.message().contains("/v2/whatever"));
    let a = t.get("/v1/check").await;
    assert_eq!(a.status, 405);
    assert!(a.message().contains("GET"));
    let a = t.send(t.request(reqwest::Method::PATCH, CONFIGS)).await;
    assert_eq!(a.status, 405);
    assert!(a.message().contains(CONFIGS), "{}", a.body);
    // Inside /api the message names the path the client sent, prefix included.
    let a = t.get("/api/unknown").await;
    assert_eq!(a.status, 404);
    assert!(a.message().contains("/api/unknown"), "{}", a.body);
    assert_eq!(t.get("/health").await.status, 200);
    let ready = t.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["status"], "ready");
}
