//! Time: sliding windows giving capacity back, budget periods resetting, live usage as a
//! window slides, lengthened limits keeping their usage, and refunds that arrive after their
//! reservation's window or period.

use super::{CONFIGS, limited};
use crate::common::{Backend, Tollgate};
use serde_json::json;
use std::time::Duration;

on_every_store!(
    sliding_window_returns_capacity,
    budget_period_resets,
    late_refunds_return_only_what_their_reservation_holds,
    management_shows_live_usage,
    lengthened_limits_keep_usage_past_the_old_expiry,
);

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
