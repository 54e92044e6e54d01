//! Coalesced checks: checks that arrive while a script call is in flight go together as
//! one call, and each is evaluated exactly as if sent alone. Against a real
//! `redis-server`; the batch sizes come from tollgate's own metric.

mod common;

use common::RedisServer;
use futures_util::future::join_all;
use serde_json::json;
use std::time::Duration;
use tollgate::limits::CompiledConfig;
use tollgate::store::redis::{RedisOptions, RedisStore};
use tollgate::store::{Amounts, Counters};

fn compiled(body: serde_json::Value) -> CompiledConfig {
    let req = serde_json::from_value(body).unwrap();
    let config = tollgate::model::validate::create_config(req, chrono::Utc::now()).unwrap();
    CompiledConfig::compile(config).unwrap()
}

/// (number of calls, ops carried) of `tollgate_store_batch_size` so far.
fn batches(text: &str) -> (f64, f64) {
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    (
        value("tollgate_store_batch_size_count"),
        value("tollgate_store_batch_size_sum"),
    )
}

fn tokens(n: i64) -> Amounts {
    Amounts {
        requests: 1,
        tokens: n,
        cost_nanos: 0,
    }
}

/// Single-threaded runtime: the checks below are all queued before the batching task
/// runs, so they go as one call, in this order.
#[tokio::test]
async fn one_call_carries_several_checks_each_all_or_nothing() {
    let metrics = tollgate::metrics::handle();
    let redis = RedisServer::start();
    let store = RedisStore::connect(RedisOptions {
        url: redis.url(),
        key_prefix: "t:".into(),
        timeout: Duration::from_secs(5),
        bulk_timeout: Duration::from_secs(10),
        allow_evicting: false,
        topology: tollgate::store::redis::Topology::Standalone,
        wait_replicas: 0,
    })
    .unwrap();
    let cfg = compiled(json!({"model_name": "m", "rate_limit": {
        "request_max_limit": 1000, "request_reset_duration": "1h",
        "token_max_limit": 100, "token_reset_duration": "1h"}}));
    let other = compiled(json!({"model_name": "m", "scope": "user", "scope_id": "u",
        "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1h"}}));
    // Loads the script; goes alone.
    assert!(store.check(&[&cfg], tokens(0), true).await.unwrap().allowed);
    let before = batches(&metrics.render());

    let wants = [50, 60, 30, 10, 11, 5];
    let one = [&cfg];
    let outcomes = join_all(wants.map(|t| store.check(&one, tokens(t), false))).await;
    let allowed: Vec<bool> = outcomes
        .iter()
        .map(|o| o.as_ref().unwrap().allowed)
        .collect();
    // In arrival order: 60 does not fit after 50 and is denied, consuming nothing, so 30
    // and 10 still fit; 11 would pass 100; 5 fits exactly.
    assert_eq!(allowed, [true, false, true, true, false, true]);
    let used: Vec<i64> = outcomes
        .iter()
        .map(|o| o.as_ref().unwrap().limits[1].used)
        .collect();
    assert_eq!(used, [50, 50, 80, 90, 90, 95], "each answer is its own");

    // A check denied by one config of two consumes from neither; its neighbours in the
    // same call are admitted by both.
    let both = [&cfg, &other];
    let outcomes = join_all((0..5).map(|_| store.check(&both, tokens(1), false))).await;
    let allowed: Vec<bool> = outcomes
        .iter()
        .map(|o| o.as_ref().unwrap().allowed)
        .collect();
    assert_eq!(allowed, [true, true, true, false, false]);

    let after = batches(&metrics.render());
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (2.0, 11.0),
        "two script calls carried the 11 checks"
    );
    let (_, usage) = store.read_usage(&[&cfg, &other]).await.unwrap();
    assert_eq!(
        usage[0][0].used,
        4 + 3,
        "requests: the denied checks took none"
    );
    assert_eq!(usage[0][1].used, 95 + 3, "tokens");
    assert_eq!(usage[1][0].used, 3);
}
