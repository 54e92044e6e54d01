//! Time comes from Redis: a replica with a skewed clock agrees with the others, and idle
//! counters expire, but never before the usage they hold has left its window or period.

use super::{PATIENT, sees};
use crate::common::{Backend, Process, RedisServer, Tollgate, eventually};
use serde_json::{Value, json};
use std::time::Duration;

/// One replica's wall clock is two hours ahead (libfaketime). Windows and periods are
/// computed on Redis time, so both replicas see the same usage and decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_skewed_clocks_agree() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = [&["--redis-url", url.as_str()][..], &PATIENT].concat();
    let normal = Process::spawn(&args, &[]).await;
    let skewed = Process::spawn_wrapped(
        Some(&["faketime", "-f", "+2h"]),
        &args,
        &[("FAKETIME_DONT_FAKE_MONOTONIC", "1")],
    )
    .await;
    // Proof that the clock really is skewed in that process: its log timestamps.
    let logged = skewed.stderr();
    let stamp = logged
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("a log line: {logged}"));
    let skew = chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("{stamp}: {e}"))
        .signed_duration_since(chrono::Utc::now())
        .num_minutes();
    assert!(
        (115..=125).contains(&skew),
        "faketime skews by ~2h, got {skew} min"
    );
    // Yet what it writes is stamped with Redis's time, so a budget grid anchored at
    // creation runs on the clock the scripts count with.
    let probe = skewed.create(json!({"model_name": "probe"})).await;
    let created = skewed.config(&probe).await["created_at"]
        .as_str()
        .unwrap()
        .to_string();
    let created = chrono::DateTime::parse_from_rfc3339(&created).unwrap();
    let off = created
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!(off.abs() < 60, "created_at on Redis time, off by {off} s");

    let id = normal
        .create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 4, "request_reset_duration": "1m"},
                       "budgets": [{"max_limit": 1.0, "reset_duration": "1h"}]}))
        .await;
    assert!(eventually(Duration::from_secs(2), || sees(&skewed, &id)).await);
    for client in [
        &normal.client,
        &skewed.client,
        &normal.client,
        &skewed.client,
    ] {
        assert_eq!(
            client
                .check(json!({"model": "m", "cost": 0.2}))
                .await
                .status,
            200
        );
    }
    for client in [&normal.client, &skewed.client] {
        let a = client.check(json!({"model": "m"})).await;
        assert_eq!(a.status, 429, "{}", a.body);
        assert_eq!(a.body["reason"], "request_limited");
        let retry = a.body["retry_after_ms"].as_i64().unwrap();
        assert!(
            retry > 50_000 && retry <= 60_000,
            "same window on both replicas: {retry}"
        );
    }
    let (n, s): (Value, Value) = (normal.config(&id).await, skewed.config(&id).await);
    assert_eq!(n["rate_limit"]["request_current_usage"], 4);
    assert_eq!(s["rate_limit"]["request_current_usage"], 4);
    assert_eq!(
        n["budgets"][0]["current_usage"],
        s["budgets"][0]["current_usage"]
    );
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(
            v["rate_limit"]["request_last_reset"].as_str().unwrap(),
        )
        .unwrap()
    };
    let apart = at(&s)
        .signed_duration_since(at(&n))
        .num_milliseconds()
        .abs();
    assert!(
        apart < 5_000,
        "window starts come from Redis time, not 2h apart: {apart}ms"
    );
}

/// Counters expire when idle, but never before the usage they hold has left its window
/// or period: a 1s window's hash is gone 2s after the last check, while a hash that
/// also holds a daily budget lives to the budget's period end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_counters_expire_and_live_ones_do_not() {
    let t = Tollgate::start(Backend::Redis).await;
    let redis = t.redis.as_ref().unwrap();
    let window_only = t
        .create(json!({"model_name": "w", "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1s"}}))
        .await;
    let with_budget = t
        .create(json!({"model_name": "b", "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1s"},
                       "budgets": [{"max_limit": 10, "reset_duration": "1d"}]}))
        .await;
    let pttl = |id: &str| -> i64 { redis.cmd(&["PTTL", &format!("tollgate:c:{id}")]) };
    for _ in 0..3 {
        assert_eq!(t.check(json!({"model": "w"})).await.status, 200);
        assert_eq!(
            t.check(json!({"model": "b", "cost": 0.5})).await.status,
            200
        );
    }
    let ttl = pttl(&window_only);
    assert!(
        ttl > 0 && ttl <= 1_000 + 34 + 1_000,
        "window-only TTL {ttl}"
    );
    assert!(
        pttl(&with_budget) > 23 * 3_600_000,
        "the budget keeps its hash for its period"
    );
    // A later check in a new sub-bucket must not shorten the budget's lifetime.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        t.check(json!({"model": "b", "cost": 0.5})).await.status,
        200
    );
    assert!(pttl(&with_budget) > 23 * 3_600_000);
    assert!(
        eventually(Duration::from_secs(4), || async {
            pttl(&window_only) == -2
        })
        .await,
        "the idle window's hash expired"
    );
    let budget = t.config(&with_budget).await;
    assert_eq!(
        budget["budgets"][0]["current_usage"], 2.0,
        "all four charges still counted"
    );
}
