//! Usage-report markers, which apply each `request_id` once: the idempotency of
//! `/v1/usage` at a bounded Redis memory cost per marker, measured on a real
//! `redis-server`.

mod common;

use common::RedisServer;
use futures_util::future::join_all;
use serde_json::json;
use std::time::Duration;
use tollgate::limits::{CompiledConfig, MatchKey};
use tollgate::store::redis::{RedisOptions, RedisStore};
use tollgate::store::{Counters, UsageDelta, UsageOutcome, scoped_request_id};

const MARKERS: usize = 100_000;

fn used_memory(redis: &RedisServer) -> i64 {
    let info: String = redis.cmd(&["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_marker_costs_at_most_48_bytes_and_is_remembered() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(RedisOptions {
        url: redis.url(),
        key_prefix: "t:".into(),
        timeout: Duration::from_secs(10),
        bulk_timeout: Duration::from_secs(30),
        allow_evicting: false,
        topology: tollgate::store::redis::Topology::Standalone,
        wait_replicas: 0,
    })
    .unwrap();
    let req = serde_json::from_value(json!({"model_name": "m",
        "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1h"}}))
    .unwrap();
    let cfg = CompiledConfig::compile(
        tollgate::model::validate::create_config(req, chrono::Utc::now()).unwrap(),
    )
    .unwrap();
    let key = MatchKey {
        model: "m",
        provider: Some("openai"),
        virtual_key: Some("vk-1"),
        user: Some("user-1"),
    };
    let delta = UsageDelta {
        tokens: 1,
        cost_nanos: 0,
        reserved_at_ms: None,
    };
    let report = |i: usize| {
        let id = scoped_request_id(&key, &format!("req-{i:08}"));
        let store = &store;
        let cfg = &cfg;
        async move {
            store
                .record_usage(&[cfg], delta, Some(&id))
                .await
                .unwrap()
                .outcome
        }
    };
    assert_eq!(report(MARKERS).await, UsageOutcome::Applied);
    let before = used_memory(&redis);
    for chunk in (0..MARKERS).collect::<Vec<_>>().chunks(64) {
        let outcomes = join_all(chunk.iter().map(|&i| report(i))).await;
        assert!(outcomes.iter().all(|o| *o == UsageOutcome::Applied));
    }
    let per_marker = (used_memory(&redis) - before) as f64 / MARKERS as f64;
    println!("{per_marker:.1} bytes of Redis memory per usage marker over {MARKERS}");
    assert!(per_marker <= 48.0, "{per_marker:.1} bytes per marker");
    // Every one of them is remembered: a retry is a duplicate.
    for chunk in (0..MARKERS).step_by(97).collect::<Vec<_>>().chunks(64) {
        let outcomes = join_all(chunk.iter().map(|&i| report(i))).await;
        assert!(outcomes.iter().all(|o| *o == UsageOutcome::Duplicate));
    }
    // ...for at least a day: the day's hashes outlive the next day.
    let keys: Vec<String> = redis.cmd(&["KEYS", "t:u:*"]);
    assert!(
        !keys.is_empty() && keys.len() <= 8192,
        "{} marker hashes",
        keys.len()
    );
    let ttl: i64 = redis.cmd(&["PTTL", &keys[0]]);
    assert!(ttl > 24 * 3_600_000, "markers kept {ttl} ms");
}
