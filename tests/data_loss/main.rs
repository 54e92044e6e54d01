//! Configs outlive Redis's data (the section of that name in docs/redis-topologies.md).
//! Real `redis-server` processes that the tests start, flush, restart, fill until they
//! evict, and fail over (through a TCP proxy of the test's own, the "virtual IP"
//! operators put in front of Redis). After each loss, a tenant that was at its limit is
//! admitted at most `max` more times (its counter restarts from zero), never without
//! bound, and the configs are back in Redis.
//!
//! This file holds the tenants and replicas the modules share; each module one kind of
//! loss.

#[path = "../common/mod.rs"]
mod common;

mod failover;
mod losses;
mod sync;

use common::{Client, Process, RedisServer, eventually};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

const CONFIGS: &str = "/api/governance/model-configs";
const MAX: usize = 5;

fn limited(requests: usize) -> Value {
    json!({"request_max_limit": requests, "request_reset_duration": "1h"})
}

/// Tenant `i`'s config body and check body.
fn tenant(i: usize) -> (Value, Value) {
    let user = format!("u-{i}");
    (
        json!({"model_name": "m", "scope": "user", "scope_id": user, "rate_limit": limited(MAX)}),
        json!({"model": "m", "user": user}),
    )
}

/// A replica as its own process (its own metrics), on `redis`, with extra flags.
async fn replica(redis: &str, extra: &[&str]) -> Process {
    let mut args = vec!["--redis-url", redis, "--on-store-error", "deny"];
    args.extend_from_slice(extra);
    let p = Process::spawn(&args, &[]).await;
    let ready = || async { p.get("/ready").await.status == 200 };
    assert!(
        eventually(Duration::from_secs(10), ready).await,
        "replica not ready: {}",
        p.stderr()
    );
    p
}

/// Fills tenant `i` to its limit through `c` (the next check is denied).
async fn fill(c: &Client, i: usize) {
    let (_, check) = tenant(i);
    for n in 0..MAX {
        assert_eq!(c.check(check.clone()).await.status, 200, "check {n}");
    }
    assert_eq!(c.check(check).await.status, 429);
}

/// Admitted out of `tries` checks of tenant `i`, alternating over `clients`.
async fn admitted(clients: &[&Client], i: usize, tries: usize) -> usize {
    let (_, check) = tenant(i);
    let mut n = 0;
    for k in 0..tries {
        let a = clients[k % clients.len()].check(check.clone()).await;
        assert!(
            a.status == 200 || a.status == 429,
            "{}: {}",
            a.status,
            a.body
        );
        n += (a.status == 200) as usize;
    }
    n
}

fn stored_configs(redis: &RedisServer) -> usize {
    let ids: Vec<String> = redis.cmd(&["HKEYS", "tollgate:configs"]);
    ids.iter().filter(|id| !id.starts_with("__")).count()
}

/// The sum of the samples of `name` (with its labels, if given) on `p`'s `/metrics`.
async fn metric(p: &Client, name: &str) -> f64 {
    let text = reqwest::get(p.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn restored(redis: &RedisServer, want: usize) -> bool {
    eventually(Duration::from_secs(10), || async move {
        stored_configs(redis) == want
    })
    .await
}

fn addr(r: &RedisServer) -> SocketAddr {
    format!("127.0.0.1:{}", r.port).parse().unwrap()
}
