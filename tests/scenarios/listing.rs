//! Listing configs: filters, pagination and order, `from_memory` lists with the usage last
//! seen, and the API keys that guard the management API.

use super::CONFIGS;
use crate::common::{self, Backend, Tollgate};
use serde_json::json;
use std::time::Duration;

on_every_store!(
    list_filters_paginates_and_orders,
    api_keys_guard_the_management_api,
    from_memory_lists_usage_as_last_seen,
);

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
