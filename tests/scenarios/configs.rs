//! Creating and reading configs: the shape of a created config, validation of new ones,
//! identity conflicts, and the legacy `budget` field.

use super::CONFIGS;
use crate::common::{Backend, Tollgate};
use serde_json::{Value, json};

on_every_store!(
    create_get_and_shape,
    create_rejects_invalid_input,
    duplicate_identity_is_a_conflict,
    legacy_budget_is_accepted,
);

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
