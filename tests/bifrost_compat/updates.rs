//! Updates (`updateModelConfig`): unset fields sent as `null`, an empty provider, an empty
//! rate limit, the legacy `budget` object, and the usage a new budget inherits.

use super::{budget, path};
use crate::common::{Backend, Tollgate};
use serde_json::{Value, json};

on_every_store!(
    put_with_every_unset_field_null_changes_nothing,
    put_provider_empty_string_widens_to_every_provider,
    put_rate_limit_empty_object_removes_it,
    new_budget_starts_with_closest_shorter_budgets_usage,
    legacy_budget_on_put_updates_the_first_budget_or_creates_it,
);

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
