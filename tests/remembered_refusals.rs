//! Refusals answered without a round trip, against a real Redis: while a limit that
//! refused must still refuse (for the retry time the store gave, at most
//! `--remember-refusals-ms`), checks asking as much of it get their 429 with no script
//! call; a refund through the replica, a new revision of the config, a smaller request
//! and the cap's end all send checks to the store again.

mod common;

use common::{Client, Process, RedisServer};
use serde_json::json;
use std::time::Duration;

const CONFIGS: &str = "/api/governance/model-configs";

/// Checks this replica asked the store (its own count of check calls).
async fn store_checks(c: &Client) -> f64 {
    metric(c, r#"tollgate_store_duration_seconds_count{op="check"}"#).await
}

async fn metric(c: &Client, name: &str) -> f64 {
    let text = reqwest::get(c.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).filter(|v| v.starts_with(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn tollgate(redis: &RedisServer, cap_ms: &str) -> Process {
    Process::spawn(
        &[
            "--redis-url",
            &redis.url(),
            "--remember-refusals-ms",
            cap_ms,
        ],
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_limit_refuses_without_a_script_call_until_the_cap() {
    let redis = RedisServer::start();
    let p = tollgate(&redis, "1500").await;
    let id = p
        .create(json!({"model_name": "m", "rate_limit": {
            "request_max_limit": 3, "request_reset_duration": "1h"}}))
        .await;
    for _ in 0..3 {
        assert_eq!(p.check(json!({"model": "m"})).await.status, 200);
    }
    let first = p.check(json!({"model": "m"})).await;
    assert_eq!(first.status, 429, "{}", first.body);
    let before = store_checks(&p).await;
    for _ in 0..50 {
        let a = p.check(json!({"model": "m"})).await;
        assert_eq!(a.status, 429);
        assert_eq!(a.body["reason"], "request_limited");
        assert!(a.header("retry-after").is_some());
        assert_eq!(a.body["limits"][0]["used"], 3, "{}", a.body);
    }
    assert_eq!(
        store_checks(&p).await,
        before,
        "no store call while remembered"
    );
    assert_eq!(metric(&p, "tollgate_refusals_remembered_total").await, 50.0);
    // After the cap, the store is asked again (and still refuses).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(p.check(json!({"model": "m"})).await.status, 429);
    assert_eq!(store_checks(&p).await, before + 1.0);
    // A new revision (a higher limit) is checked at once, on this replica.
    let put = p
        .put(
            &format!("{CONFIGS}/{id}"),
            &json!({"rate_limit": {
            "request_max_limit": 4, "request_reset_duration": "1h"}}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(p.check(json!({"model": "m"})).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_or_a_smaller_request_goes_to_the_store() {
    let redis = RedisServer::start();
    let p = tollgate(&redis, "60000").await;
    p.create(json!({"model_name": "m", "rate_limit": {
        "token_max_limit": 100, "token_reset_duration": "1h"}}))
        .await;
    let reserve = p.check(json!({"model": "m", "tokens": 90})).await;
    assert_eq!(reserve.status, 200);
    let at = reserve.body["reserved_at_ms"].as_i64().unwrap();
    // 20 does not fit; 5 does: a smaller request is not refused from memory.
    assert_eq!(
        p.check(json!({"model": "m", "tokens": 20})).await.status,
        429
    );
    assert_eq!(
        p.check(json!({"model": "m", "tokens": 30})).await.status,
        429
    );
    assert_eq!(
        p.check(json!({"model": "m", "tokens": 5})).await.status,
        200
    );
    // Settling the 90 at 50 frees 40: the remembered refusal of 20 is forgotten.
    let settle = p
        .post(
            "/v1/usage",
            &json!({"model": "m", "tokens": 50, "reserved_tokens": 90,
            "reserved_at_ms": at, "request_id": "r-1"}),
        )
        .await;
    assert_eq!(settle.status, 200, "{}", settle.body);
    assert_eq!(
        p.check(json!({"model": "m", "tokens": 20})).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_asks_the_store_every_time() {
    let redis = RedisServer::start();
    let p = tollgate(&redis, "0").await;
    p.create(json!({"model_name": "m", "rate_limit": {
        "request_max_limit": 1, "request_reset_duration": "1h"}}))
        .await;
    assert_eq!(p.check(json!({"model": "m"})).await.status, 200);
    let before = store_checks(&p).await;
    for _ in 0..5 {
        assert_eq!(p.check(json!({"model": "m"})).await.status, 429);
    }
    assert_eq!(store_checks(&p).await, before + 5.0);
    assert_eq!(metric(&p, "tollgate_refusals_remembered_total").await, 0.0);
}
