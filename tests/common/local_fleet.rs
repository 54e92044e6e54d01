//! What the `--on-store-error local` tests share (each includes it by path): replicas
//! with the local policy, a limit of 300 with 100 used that every replica has seen,
//! streams of checks told apart by who decided them, and the fleet's metrics.
#![allow(dead_code)]

use crate::common::{Client, Process, eventually};
use crate::faults::{limited, metric};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const MODEL: &str = "m-local";

pub fn replica_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
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

pub async fn gauge(p: &Process, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(
        &crate::common::configs::metrics_text(&p.client).await,
        name,
        labels,
    )
}

/// Creates the limit (300 requests an hour), uses 100 of it, and waits until every
/// replica counted 3 replicas and saw the 100 used.
pub async fn limit_with_100_used(procs: &[Process]) -> String {
    let id = procs[0]
        .client
        .create(json!({"model_name": MODEL, "rate_limit": limited(300, "1h")}))
        .await;
    for p in procs {
        assert!(
            eventually(Duration::from_secs(5), || async {
                let a = p
                    .client
                    .check(json!({"model": MODEL, "dry_run": true}))
                    .await;
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
                let a = p
                    .client
                    .check(json!({"model": MODEL, "dry_run": true, "requests": 0}))
                    .await;
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
pub struct Tally {
    pub admitted_locally: u64,
    pub refused_locally: u64,
    pub admitted_by_redis: u64,
    pub refused_by_redis: u64,
}

/// Runs `load` for `secs` seconds.
pub async fn load_for(procs: &[Process], secs: u64) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stopper.store(true, Ordering::Relaxed);
    });
    let clients: Vec<Client> = procs.iter().map(|p| p.client.clone()).collect();
    load_clients(&clients, stop).await
}

pub async fn sum(procs: &[Process], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for p in procs {
        total += gauge(p, name, labels).await;
    }
    total
}

/// Three replicas with `local` on the Redis at `url`.
pub async fn fleet(url: &str, extra: &[&str]) -> Vec<Process> {
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(Process::spawn(&replica_args(url, extra), &[]).await);
    }
    procs
}

/// Waits until every replica has charged Redis with (and settled) its local admissions.
pub async fn all_charged(procs: &[Process]) -> bool {
    eventually(Duration::from_secs(20), || async {
        sum(procs, "tollgate_local_journal_entries", &[]).await == 0.0
    })
    .await
}

/// Local admissions the fleet sent to Redis: charged, or found charged already (a retry).
pub async fn charged(procs: &[Process]) -> f64 {
    sum(
        procs,
        "tollgate_local_replayed_total",
        &[("result", "applied")],
    )
    .await
        + sum(
            procs,
            "tollgate_local_replayed_total",
            &[("result", "duplicate")],
        )
        .await
}

/// The requests Redis counts in the limit's window now.
pub async fn used_in_redis(p: &Process, id: &str) -> i64 {
    p.client.config(id).await["rate_limit"]["request_current_usage"]
        .as_i64()
        .expect("a count")
}

/// After the outage the fleet goes back to Redis, which has exactly `left` to give.
pub async fn redis_gives_exactly(procs: &[Process], left: u64) {
    // Past the settling second, checks go to Redis again.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let a = procs[2]
                .client
                .check(json!({"model": MODEL, "dry_run": true}))
                .await;
            a.body["fallback"].is_null()
        })
        .await
    );
    let mut admitted = 0;
    for i in 0..(left + 6) {
        let a = procs[i as usize % 3]
            .client
            .check(json!({"model": MODEL}))
            .await;
        assert!(a.body["fallback"].is_null(), "{}", a.body);
        if a.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, left, "Redis admits what is left, not one more");
}

/// Four streams of one-request checks on each of `clients` until `stop`; every answer
/// is Redis's, or the local fallback's (a 429 of which names a limit's kind, or the
/// store while the replica settles).
pub async fn load_clients(clients: &[Client], stop: Arc<AtomicBool>) -> Tally {
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
