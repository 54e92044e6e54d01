//! Sentinel mode against real servers: a primary, a replica and three sentinels
//! (`redis-server --sentinel`), with passwords. The primary is SIGKILLed mid-run: tollgate
//! must follow the promoted replica, limits must still hold, and what the failover loses
//! must be what docs/redis-topologies.md states (and nothing with
//! `--redis-wait-replicas`).
//!
//! This file holds the tollgate, checks and failover driver the modules share.

#[path = "../common/mod.rs"]
mod common;

mod failover;
mod loss;
mod startup;

use common::sentinel::{MASTER_NAME, MASTER_PASSWORD, SentinelSet};
use common::{Answer, Client, settings};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tollgate::settings::RedisMode;

/// Checks in flight at once.
const CONCURRENCY: usize = 8;

async fn tollgate(
    set: &SentinelSet,
    tweak: impl FnOnce(&mut tollgate::Settings),
) -> (tollgate::Running, Client) {
    let mut s = settings();
    s.redis_mode = RedisMode::Sentinel;
    s.redis_url = Some(set.urls());
    s.sentinel_master = Some(MASTER_NAME.into());
    s.redis_master_password = Some(MASTER_PASSWORD.into());
    tweak(&mut s);
    let running = tollgate::start(s)
        .await
        .expect("tollgate starts in sentinel mode");
    let client = Client::new(format!("http://{}", running.addr));
    (running, client)
}

fn limited_config(n: u64) -> Value {
    json!({"model_name": "gpt-4o", "rate_limit": {"request_max_limit": n, "request_reset_duration": "1h"}})
}

fn check() -> Value {
    json!({"model": "gpt-4o", "provider": "openai"})
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// 200 decided by Redis.
    Admitted,
    /// 429 decided by Redis (a limit).
    Limited,
    /// Answered by `--on-store-error` (deny in these tests).
    Fallback,
}

fn outcome(a: &Answer) -> Outcome {
    match (a.status.as_u16(), a.body["fallback"].is_null()) {
        (200, true) => Outcome::Admitted,
        (429, true) => Outcome::Limited,
        (429, false) => Outcome::Fallback,
        other => panic!("unexpected answer {other:?}: {}", a.body),
    }
}

/// Counts of what `CONCURRENCY` loops of checks were answered, and when admissions came.
#[derive(Default)]
struct Tally {
    admitted: AtomicU64,
    limited: AtomicU64,
    fallbacks: AtomicU64,
    admitted_at: parking_lot::Mutex<Vec<(Instant, Duration)>>,
}

/// Runs checks from `CONCURRENCY` loops until `done` says stop; returns once all have
/// their last answer.
async fn hammer(
    client: &Client,
    done: impl Fn(&Tally) -> bool + Send + Sync + 'static,
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let done = Arc::new(done);
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, tally, done, stop) =
                (client.clone(), tally.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    let a = client.check(check()).await;
                    match outcome(&a) {
                        Outcome::Admitted => {
                            tally.admitted.fetch_add(1, Ordering::SeqCst);
                            tally
                                .admitted_at
                                .lock()
                                .push((Instant::now(), sent.elapsed()));
                        }
                        Outcome::Limited => {
                            tally.limited.fetch_add(1, Ordering::SeqCst);
                        }
                        Outcome::Fallback => {
                            tally.fallbacks.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    if done(&tally) {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for l in loops {
        l.await.unwrap();
    }
    tally
}

async fn request_usage(client: &Client, id: &str) -> u64 {
    client.config(id).await["rate_limit"]["request_current_usage"]
        .as_u64()
        .unwrap()
}

/// What a failover did, timed from the SIGKILL.
struct Failover {
    /// Until the sentinels named the new master.
    switched: Duration,
    /// Until tollgate answered a (dry-run) check from Redis again.
    followed: Duration,
}

/// Kills the primary and waits (polling with dry-run checks) until tollgate answers
/// from the promoted replica.
async fn kill_primary_and_follow(
    set: &mut SentinelSet,
    client: &Client,
    killed: Instant,
) -> Failover {
    let old = set.primary.port;
    let (mut switched, mut followed) = (None, None);
    while switched.is_none() || followed.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "no failover within 25 s (switched: {switched:?}, followed: {followed:?})"
        );
        if switched.is_none() && set.named_master_port().is_some_and(|p| p != old) {
            switched = Some(killed.elapsed());
        }
        if followed.is_none() {
            let a = client
                .check(json!({"model": "gpt-4o", "provider": "openai", "dry_run": true}))
                .await;
            if outcome(&a) != Outcome::Fallback {
                followed = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        set.named_master_port(),
        Some(set.replica.port),
        "the replica was promoted"
    );
    Failover {
        switched: switched.unwrap(),
        followed: followed.unwrap(),
    }
}
