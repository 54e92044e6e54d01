//! `--on-store-error local`: three tollgate processes share a limit of 300 of which 100
//! are used; Redis stops answering (killed and restarted with its data, or blackholed by
//! a proxy of the test's own) under concurrent load. The fleet admits at most the 200
//! left, each replica its share; once Redis answers, the counters include every local
//! admission exactly once. A replica restarted during the outage (with `--state-file`)
//! keeps its share and still charges what it admitted before.

mod common;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;

use common::redis_server::redis_server_binary;
use common::{Process, RedisServer, eventually};
use faults::{limited, metric};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const MODEL: &str = "m-local";

/// A Redis that keeps its data across a kill (append-only file, fsync on every write).
fn durable_redis() -> RedisServer {
    let args = ["--appendonly", "yes", "--appendfsync", "always"].map(String::from);
    RedisServer::start_with(&redis_server_binary(), &args)
}

fn replica_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--redis-url",
        url,
        "--on-store-error",
        "local",
        "--store-timeout-ms",
        "200",
        "--local-refresh-ms",
        "200",
    ];
    args.extend_from_slice(extra);
    args
}

async fn gauge(p: &Process, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&common::configs::metrics_text(&p.client).await, name, labels)
}

/// Creates the limit (300 requests an hour), uses 100 of it, and waits until every
/// replica counted 3 replicas and saw the 100 used.
async fn limit_with_100_used(procs: &[Process]) -> String {
    let id = procs[0]
        .client
        .create(json!({"model_name": MODEL, "rate_limit": limited(300, "1h")}))
        .await;
    for p in procs {
        assert!(
            eventually(Duration::from_secs(5), || async {
                let a = p.client.check(json!({"model": MODEL, "dry_run": true})).await;
                a.body["limits"].as_array().is_some_and(|l| !l.is_empty())
            })
            .await,
            "every replica has the config"
        );
    }
    let a = procs[0]
        .client
        .check(json!({"model": MODEL, "requests": 100}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    for p in procs {
        assert!(
            eventually(Duration::from_secs(10), || async {
                let a = p.client.check(json!({"model": MODEL, "dry_run": true, "requests": 0})).await;
                a.body["limits"][0]["used"] == 100
                    && gauge(p, "tollgate_replicas_seen", &[]).await == 3.0
            })
            .await,
            "each replica counts 3 replicas and saw the 100 used"
        );
    }
    id
}

/// What a stream of checks got.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    admitted_locally: u64,
    refused_locally: u64,
    admitted_by_redis: u64,
    refused_by_redis: u64,
}

/// Runs `load` for `secs` seconds.
async fn load_for(procs: &[Process], secs: u64) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stopper.store(true, Ordering::Relaxed);
    });
    let clients: Vec<common::Client> = procs.iter().map(|p| p.client.clone()).collect();
    load_clients(&clients, stop).await
}

async fn sum(procs: &[Process], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for p in procs {
        total += gauge(p, name, labels).await;
    }
    total
}

/// Waits until every replica has charged Redis with (and settled) its local admissions.
async fn all_charged(procs: &[Process]) -> bool {
    eventually(Duration::from_secs(20), || async {
        sum(procs, "tollgate_local_journal_entries", &[]).await == 0.0
    })
    .await
}

/// The requests Redis counts in the limit's window now.
async fn used_in_redis(p: &Process, id: &str) -> i64 {
    p.client.config(id).await["rate_limit"]["request_current_usage"]
        .as_i64()
        .expect("a count")
}

/// After the outage the fleet goes back to Redis, which has exactly `left` to give.
async fn redis_gives_exactly(procs: &[Process], left: u64) {
    // Past the settling second, checks go to Redis again.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let a = procs[2].client.check(json!({"model": MODEL, "dry_run": true})).await;
            a.body["fallback"].is_null()
        })
        .await
    );
    let mut admitted = 0;
    for i in 0..(left + 6) {
        let a = procs[i as usize % 3].client.check(json!({"model": MODEL})).await;
        assert!(a.body["fallback"].is_null(), "{}", a.body);
        if a.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, left, "Redis admits what is left, not one more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_the_fleet_admits_at_most_what_was_left_and_charges_it_once() {
    let mut redis = durable_redis();
    let url = redis.url();
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(Process::spawn(&replica_args(&url, &[]), &[]).await);
    }
    let id = limit_with_100_used(&procs).await;

    redis.kill();
    let outage = load_for(&procs, 5).await;
    println!("Redis down 5 s under load: {outage:?}");
    assert_eq!(outage.admitted_by_redis + outage.refused_by_redis, 0);
    assert!(
        outage.admitted_locally <= 200,
        "the fleet admitted {} of the 200 left",
        outage.admitted_locally
    );
    // Each replica had (300 - 100) / 3 = 66, and the load used it up.
    assert_eq!(outage.admitted_locally, 3 * 66, "{outage:?}");
    assert!(outage.refused_locally > 0, "the shares ran out: {outage:?}");
    assert_eq!(
        sum(&procs, "tollgate_local_decisions_total", &[("decision", "admitted")]).await,
        outage.admitted_locally as f64
    );

    tokio::task::block_in_place(|| redis.restart());
    assert!(all_charged(&procs).await, "the journals were charged");
    assert_eq!(
        sum(&procs, "tollgate_local_replayed_total", &[("result", "applied")]).await,
        outage.admitted_locally as f64,
        "every local admission charged once"
    );
    assert_eq!(used_in_redis(&procs[1], &id).await, 100 + 198);
    redis_gives_exactly(&procs, 2).await;
    assert_eq!(used_in_redis(&procs[0], &id).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_through_recovery_never_past_the_limit() {
    let mut redis = durable_redis();
    let url = redis.url();
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(Process::spawn(&replica_args(&url, &[]), &[]).await);
    }
    let id = limit_with_100_used(&procs).await;

    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let procs: Vec<common::Client> = procs.iter().map(|p| p.client.clone()).collect();
        let stop = stop.clone();
        // The load holds the clients only (the processes stay here).
        tokio::spawn(async move { load_clients(&procs, stop).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::task::block_in_place(|| redis.restart());
    assert!(all_charged(&procs).await, "the journals were charged");
    // The load goes on past the settling, against Redis.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let t = running.await.unwrap();
    println!("Redis down 5 s, load before, during and after: {t:?}");
    let admitted = t.admitted_locally + t.admitted_by_redis;
    assert!(admitted <= 200, "admitted {admitted} of the 200 left: {t:?}");
    assert!(t.admitted_locally > 0 && t.refused_by_redis > 0, "{t:?}");
    assert_eq!(
        used_in_redis(&procs[0], &id).await,
        100 + admitted as i64,
        "Redis counts every admission once: {t:?}"
    );
}

/// Four streams of one-request checks on each of `clients` until `stop`; every answer
/// is Redis's, or the local fallback's (a 429 of which names a limit's kind, or the
/// store while the replica settles).
async fn load_clients(clients: &[common::Client], stop: Arc<AtomicBool>) -> Tally {
    let mut tasks = Vec::new();
    for c in clients {
        for _ in 0..4 {
            let client = c.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut t = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    let a = client.check(json!({"model": MODEL})).await;
                    let local = !a.body["fallback"].is_null();
                    if local {
                        assert_eq!(a.body["fallback"]["policy"], "local", "{}", a.body);
                    }
                    let reason = a.body["reason"].as_str().unwrap_or("");
                    match (a.status.as_u16(), local) {
                        (200, true) => t.admitted_locally += 1,
                        (200, false) => t.admitted_by_redis += 1,
                        (429, true) => {
                            assert!(
                                ["request_limited", "store_unavailable"].contains(&reason),
                                "{}",
                                a.body
                            );
                            t.refused_locally += 1
                        }
                        (429, false) => {
                            assert_eq!(reason, "request_limited", "{}", a.body);
                            t.refused_by_redis += 1
                        }
                        (s, _) => panic!("unexpected answer {s}: {}", a.body),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                t
            }));
        }
    }
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await.unwrap();
        total.admitted_locally += t.admitted_locally;
        total.refused_locally += t.refused_locally;
        total.admitted_by_redis += t.admitted_by_redis;
        total.refused_by_redis += t.refused_by_redis;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_blackholed_the_fleet_admits_at_most_what_was_left_and_charges_it_once() {
    let redis = RedisServer::start();
    let proxy = tcp_proxy::Proxy::start(redis.port).await;
    let url = proxy.url();
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(Process::spawn(&replica_args(&url, &[]), &[]).await);
    }
    let id = limit_with_100_used(&procs).await;

    proxy.blackhole(true);
    let outage = load_for(&procs, 5).await;
    println!("Redis blackholed 5 s under load: {outage:?}");
    assert_eq!(outage.admitted_by_redis + outage.refused_by_redis, 0);
    assert_eq!(outage.admitted_locally, 3 * 66, "{outage:?}");

    proxy.blackhole(false);
    assert!(all_charged(&procs).await, "the journals were charged");
    assert_eq!(
        sum(&procs, "tollgate_local_replayed_total", &[("result", "applied")]).await,
        outage.admitted_locally as f64,
        "every local admission charged once"
    );
    assert_eq!(used_in_redis(&procs[1], &id).await, 100 + 198);
    redis_gives_exactly(&procs, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_restarted_during_the_outage_keeps_its_share_and_charges_what_it_admitted() {
    let mut redis = durable_redis();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state = state.to_str().unwrap();
    let mut procs = Vec::new();
    for _ in 0..2 {
        procs.push(Process::spawn(&replica_args(&url, &[]), &[]).await);
    }
    let with_file = replica_args(&url, &["--state-file", state]);
    procs.push(Process::spawn(&with_file, &[]).await);
    let id = limit_with_100_used(&procs).await;
    // The snapshot is in the state file.
    assert!(
        eventually(Duration::from_secs(5), || async {
            std::fs::read_to_string(state).is_ok_and(|s| s.contains(MODEL))
        })
        .await
    );

    redis.kill();
    let before = load_for(&procs, 3).await;
    assert_eq!(before.admitted_locally, 3 * 66, "{before:?}");
    let journal = format!("{state}.local");
    assert!(
        eventually(Duration::from_secs(5), || async {
            std::fs::read_to_string(&journal).is_ok_and(|s| s.matches("\"id\":\"local:").count() == 66)
        })
        .await,
        "the restarted replica's journal holds its 66 admissions"
    );
    // Killed (SIGKILL) and started again while Redis is still down.
    drop(procs.pop());
    procs.push(Process::spawn(&with_file, &[]).await);
    let after = load_for(&procs, 2).await;
    println!("before the restart: {before:?}; after: {after:?}");
    assert_eq!(
        after.admitted_locally, 0,
        "no replica's share has room left, the restarted one's included: {after:?}"
    );
    assert!(after.refused_locally > 0);

    tokio::task::block_in_place(|| redis.restart());
    assert!(all_charged(&procs).await, "the journals were charged");
    assert_eq!(
        gauge(&procs[2], "tollgate_local_replayed_total", &[("result", "applied")]).await,
        66.0,
        "the restarted replica charged what it admitted before its restart"
    );
    assert_eq!(used_in_redis(&procs[0], &id).await, 100 + 198);
    redis_gives_exactly(&procs, 2).await;
}
