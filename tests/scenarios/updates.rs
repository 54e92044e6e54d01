//! Changing configs: what a PUT replaces and what usage it keeps, what it refuses, what a
//! DELETE removes (counters included), and that every change applies to the next check.

use super::{CONFIGS, limited};
use crate::common::{Backend, Tollgate};
use serde_json::{Value, json};

on_every_store!(
    update_replaces_and_keeps_usage,
    update_rejects_identity_changes_and_unknown_ids,
    delete_removes_config_and_counters,
    config_changes_apply_to_checks_at_once,
);

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
