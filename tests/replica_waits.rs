//! `--redis-wait-replicas` against real servers: a check Redis admitted is never answered
//! and then uncounted. A `WAIT` that falls short (fewer replicas than asked, a master
//! just promoted) leaves checks answered as Redis decided and counted, shown by `/ready`
//! and metrics; replicas that come back end it; at a replication lag well inside the
//! store timeout nothing falls back.

mod common;

use common::sentinel::{MASTER_NAME, MASTER_PASSWORD, SentinelSet};
use common::{Answer, Client, Process, RedisServer, eventually};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn limited(n: u64) -> Value {
    json!({"model_name": "m", "rate_limit": {"request_max_limit": n, "request_reset_duration": "1h"}})
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Decided by Redis: 200 or 429.
    Redis(u16),
    /// Answered by `--on-store-error`.
    Fallback,
}

fn outcome(a: &Answer) -> Outcome {
    match (a.status.as_u16(), a.body["fallback"].is_null()) {
        (s @ (200 | 429), true) => Outcome::Redis(s),
        (200 | 429, false) => Outcome::Fallback,
        other => panic!("unexpected answer {other:?}: {}", a.body),
    }
}

async fn usage(client: &Client, id: &str) -> u64 {
    client.config(id).await["rate_limit"]["request_current_usage"]
        .as_u64()
        .unwrap()
}

async fn metric(client: &Client, name: &str) -> f64 {
    let text = reqwest::get(client.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).filter(|v| v.starts_with(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn wait_calls(redis: &RedisServer) -> u64 {
    let stats: String = redis.cmd(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|v| v.split(',').next())
        .map_or(0, |v| v.parse().unwrap())
}

/// A master without replicas and `--redis-wait-replicas 1`: start-up warns, every WAIT
/// falls short, yet the limit admits exactly its max, each admitted check counted; WAITs
/// are not sent for every write meanwhile; a replica that joins ends the shortfall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_wait_keeps_admitted_checks_counted() {
    let redis = RedisServer::start();
    let url = redis.url();
    let p = Process::spawn(
        &[
            "--redis-url",
            &url,
            "--redis-wait-replicas",
            "1",
            "--store-timeout-ms",
            "100",
        ],
        &[],
    )
    .await;
    let warned = eventually(Duration::from_secs(3), || async {
        p.stderr().contains("connected replica")
    })
    .await;
    assert!(warned, "start-up warns of too few replicas: {}", p.stderr());
    let id = p.create(limited(50)).await;
    p.create(
        json!({"model_name": "roomy", "rate_limit": {"request_max_limit": 1000,
                    "request_reset_duration": "1h"}}),
    )
    .await;
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for _ in 0..80 {
        outcomes.push(outcome(&p.check(json!({"model": "m"})).await));
    }
    let elapsed = started.elapsed();
    let admitted = outcomes
        .iter()
        .filter(|o| **o == Outcome::Redis(200))
        .count();
    let limited_ = outcomes
        .iter()
        .filter(|o| **o == Outcome::Redis(429))
        .count();
    assert_eq!((admitted, limited_), (50, 30), "{outcomes:?}");
    assert_eq!(usage(&p, &id).await, 50, "every admitted check counted");
    // A master without replicas is never sent a WAIT that can only time out.
    let waits = wait_calls(&redis);
    assert_eq!(waits, 0, "{waits} WAITs in {elapsed:?}");
    let ready = p.get("/ready").await;
    assert_eq!(ready.status, 200, "still ready: {}", ready.body);
    let why = ready.body["replication"].as_str().unwrap_or_default();
    assert!(why.contains("replicas"), "/ready says why: {}", ready.body);
    assert_eq!(metric(&p, "tollgate_redis_wait_short").await, 1.0);
    assert!(metric(&p, "tollgate_redis_wait_shortfalls_total").await >= 50.0);

    let replica = RedisServer::start();
    let _: () = replica.cmd(&["REPLICAOF", "127.0.0.1", &redis.port.to_string()]);
    let joined = eventually(Duration::from_secs(10), || async {
        let _ = p.check(json!({"model": "roomy"})).await;
        p.get("/ready").await.body["replication"].is_null()
    })
    .await;
    assert!(joined, "a replica that joins ends the shortfall");
    assert_eq!(metric(&p, "tollgate_redis_wait_short").await, 0.0);
}

/// Checks from `loops` tasks until `stop`; counts of Redis's 200s and of fallbacks.
async fn hammer(client: &Client, loops: usize, stop: Arc<AtomicBool>) -> (u64, u64, Vec<Duration>) {
    let admitted = Arc::new(AtomicU64::new(0));
    let fallbacks = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..loops)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            let (admitted, fallbacks, latencies) =
                (admitted.clone(), fallbacks.clone(), latencies.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    match outcome(&client.check(json!({"model": "m"})).await) {
                        Outcome::Redis(200) => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            latencies.lock().push(sent.elapsed());
                        }
                        Outcome::Fallback => {
                            fallbacks.fetch_add(1, Ordering::SeqCst);
                        }
                        Outcome::Redis(_) => {}
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut l = latencies.lock().clone();
    l.sort();
    (
        admitted.load(Ordering::SeqCst),
        fallbacks.load(Ordering::SeqCst),
        l,
    )
}

async fn sentinel_tollgate(set: &SentinelSet, extra: &[&str]) -> Process {
    let urls = set.urls();
    let mut args = vec![
        "--redis-mode",
        "sentinel",
        "--redis-url",
        &urls,
        "--sentinel-master",
        MASTER_NAME,
        "--redis-master-password",
        MASTER_PASSWORD,
    ];
    args.extend_from_slice(extra);
    Process::spawn(&args, &[]).await
}

/// A failover with `--redis-wait-replicas 1` under the default `allow`: the promoted
/// master has no replica, so every WAIT falls short; checks are still decided by Redis
/// and counted there, and none of those it admitted is missing from its counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_a_failover_admitted_checks_stay_counted() {
    let mut set = SentinelSet::start().await;
    let p = sentinel_tollgate(&set, &["--redis-wait-replicas", "1"]).await;
    let id = p.create(limited(100_000)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let before = tokio::spawn({
        let (client, stop) = (p.client.clone(), stop.clone());
        async move { hammer(&client, 8, stop).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    set.primary.kill();
    let promoted = eventually(Duration::from_secs(20), || async {
        set.named_master_port() == Some(set.replica.port)
            && outcome(&p.check(json!({"model": "m", "dry_run": true})).await) != Outcome::Fallback
    })
    .await;
    assert!(promoted, "the replica was promoted and tollgate follows it");
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    let (admitted_before, _, _) = before.await.unwrap();
    // After the failover: decided by the promoted master (no replica to wait for).
    let stop = Arc::new(AtomicBool::new(false));
    let after = tokio::spawn({
        let (client, stop) = (p.client.clone(), stop.clone());
        async move { hammer(&client, 8, stop).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let (admitted_after, fallbacks_after, _) = after.await.unwrap();
    assert!(
        admitted_after > 0 && fallbacks_after == 0,
        "after the failover Redis decides: {admitted_after} admitted, {fallbacks_after} fallbacks"
    );
    let held = usage(&p, &id).await;
    assert!(
        held >= admitted_before + admitted_after,
        "{admitted_before} + {admitted_after} admitted by Redis, {held} counted"
    );
    assert!(metric(&p, "tollgate_redis_wait_shortfalls_total").await >= admitted_after as f64);
}

/// At 50 ms of replication lag and the default store timeout (100 ms), WAIT 1 confirms
/// every admitted check: no fallback, no shortfall. Prints the latency for the rule of thumb
/// in docs/redis-topologies.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lag_inside_the_store_timeout_falls_back_nowhere() {
    let lag = Duration::from_millis(50);
    let set = SentinelSet::start_lagging(Some(lag)).await;
    let p = sentinel_tollgate(&set, &["--redis-wait-replicas", "1"]).await;
    let id = p.create(limited(100_000)).await;
    tokio::time::sleep(lag * 3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let run = tokio::spawn({
        let (client, stop) = (p.client.clone(), stop.clone());
        async move { hammer(&client, 8, stop).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let (admitted, fallbacks, latencies) = run.await.unwrap();
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "lag {lag:?}, --redis-wait-replicas 1, --store-timeout-ms 100: {admitted} admitted, \
         {fallbacks} fallbacks, check p50 {:?} p99 {:?}",
        pct(0.5),
        pct(0.99)
    );
    assert!(admitted > 0, "checks were admitted");
    assert_eq!(fallbacks, 0, "no check fell back at {lag:?} of lag");
    assert_eq!(
        metric(&p, "tollgate_redis_wait_shortfalls_total").await,
        0.0
    );
    assert_eq!(usage(&p, &id).await, admitted);
    assert!(pct(0.5) >= lag, "a check waited for its replica");
}
