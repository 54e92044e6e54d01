//! Sentinel mode against real servers: a primary, a replica and three sentinels
//! (`redis-server --sentinel`), with passwords. The primary is SIGKILLed mid-run: tollgate
//! must follow the promoted replica, limits must still hold, and what the failover loses
//! must be what docs/redis-topologies.md states (and nothing with
//! `--redis-wait-replicas`).

mod common;

use common::sentinel::{DOWN_AFTER_MS, MASTER_NAME, MASTER_PASSWORD, SentinelSet};
use common::{Answer, Client, eventually, settings};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_mode_serves_checks_and_management() {
    let set = SentinelSet::start().await;
    let (_running, t) = tollgate(&set, |_| {}).await;
    let ready = t.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let id = t.create(limited_config(3)).await;
    for _ in 0..3 {
        assert_eq!(outcome(&t.check(check()).await), Outcome::Admitted);
    }
    assert_eq!(outcome(&t.check(check()).await), Outcome::Limited);
    assert_eq!(request_usage(&t, &id).await, 3);
    let listed = t.get("/api/governance/model-configs").await;
    assert_eq!(listed.body["total_count"], 1, "{}", listed.body);
    // The state is on the master the sentinels name, and replicated.
    let keys: i64 = set.primary.cmd(&["DBSIZE"]);
    assert!(keys > 0);
    assert!(
        eventually(Duration::from_secs(5), || async {
            set.replica.cmd::<i64>(&["DBSIZE"]) == keys
        })
        .await,
        "replica has the keys"
    );
}

/// A master name the sentinels do not know, or a master password that is wrong: tollgate
/// starts, not ready, and `/ready` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_ready_says_why_no_master_was_found() {
    let set = SentinelSet::start().await;
    let (unknown, wrong_password) = tokio::join!(
        tollgate(&set, |s| s.sentinel_master = Some("nobody".into())),
        tollgate(&set, |s| s.redis_master_password = Some("wrong".into())),
    );
    let ready = unknown.1.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert!(
        ready
            .body
            .to_string()
            .contains("does not monitor a master named"),
        "{}",
        ready.body
    );
    let ready = wrong_password.1.get("/ready").await;
    assert_eq!(ready.status, 503);
    let why = ready.body.to_string();
    assert!(
        why.contains(&set.primary.port.to_string()) && why.matches("authentication").count() == 1,
        "{why}"
    );
}

/// `rediss://` sentinels: the master they name is reached over TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinels_and_master_over_tls() {
    let set = SentinelSet::start_tls().await;
    assert!(set.urls().starts_with("rediss://"));
    let (_running, t) = tollgate(&set, |_| {}).await;
    let ready = t.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let id = t.create(limited_config(2)).await;
    for _ in 0..2 {
        assert_eq!(outcome(&t.check(check()).await), Outcome::Admitted);
    }
    assert_eq!(outcome(&t.check(check()).await), Outcome::Limited);
    assert_eq!(request_usage(&t, &id).await, 2);
}

/// The primary is killed while checks run: tollgate follows the promoted replica within
/// the failover time, config changes are heard from the new master, and a limit of N
/// admits at most N plus the failover loss docs/redis-topologies.md states (the checks
/// in flight at the crash).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follows_the_master_through_a_failover() {
    const N: u64 = 300;
    let mut set = SentinelSet::start().await;
    let (_running, t) = tollgate(&set, |s| s.store_timeout_ms = 1000).await;
    let id = t.create(limited_config(N)).await;

    let before = hammer(&t, |t| t.admitted.load(Ordering::SeqCst) >= 100).await;
    let killed = Instant::now();
    set.primary.kill();
    let failover = kill_primary_and_follow(&mut set, &t, killed).await;
    let acknowledged = before.admitted.load(Ordering::SeqCst);
    let held = request_usage(&t, &id).await;
    let lost = acknowledged.saturating_sub(held);
    eprintln!(
        "failover at natural lag: sentinels switched after {:?}, tollgate followed after {:?}; \
         {acknowledged} admitted before the kill, {held} on the promoted replica, {lost} lost",
        failover.switched, failover.followed
    );
    assert!(
        failover.followed <= failover.switched + Duration::from_secs(3),
        "tollgate follows the sentinels' switch promptly"
    );
    assert!(
        lost <= CONCURRENCY as u64,
        "at most the checks in flight at the crash are lost: {lost}"
    );
    let metrics = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tollgate_redis_master_switches_total ")),
        "the switch is counted"
    );

    // Limits hold on the new master: fill the rest, then only denials.
    let after = hammer(&t, |t| t.limited.load(Ordering::SeqCst) >= 20).await;
    assert_eq!(
        after.fallbacks.load(Ordering::SeqCst),
        0,
        "no fallback once followed"
    );
    let total = acknowledged + after.admitted.load(Ordering::SeqCst);
    eprintln!("limit {N}: {total} admitted in all through the failover ({lost} lost)");
    assert!(
        total <= N + lost,
        "{total} admitted for a limit of {N} (+{lost} lost)"
    );
    assert_eq!(
        request_usage(&t, &id).await,
        N,
        "filled exactly on the new master"
    );
    assert_eq!(outcome(&t.check(check()).await), Outcome::Limited);

    // Management and change notifications work on the new master.
    t.create(json!({"model_name": "other", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}}))
        .await;
    let channel = tollgate::store::redis::Keys::new("tollgate:", false).channel;
    assert!(
        eventually(Duration::from_secs(5), || async {
            let numsub: Vec<(String, i64)> = set.replica.cmd(&["PUBSUB", "NUMSUB", &channel]);
            numsub.first().is_some_and(|(_, n)| *n >= 1)
        })
        .await,
        "the change listener subscribed on the new master"
    );
}

/// A manual failover (`SENTINEL FAILOVER`) while no check runs: no call fails, and the
/// old master still takes writes for seconds (until the sentinels demote it), so only
/// `+switch-master` (or the periodic look) can move tollgate. It must, before the next
/// checks, or their counts would land on the old master and be lost with its demotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follows_a_manual_failover() {
    const N: u64 = 50;
    let set = SentinelSet::start().await;
    let (_running, t) = tollgate(&set, |s| s.store_timeout_ms = 1000).await;
    let id = t.create(limited_config(N)).await;
    for _ in 0..20 {
        assert_eq!(outcome(&t.check(check()).await), Outcome::Admitted);
    }
    let asked = Instant::now();
    let answer: String = set.sentinels[0].cmd(&["SENTINEL", "FAILOVER", MASTER_NAME]);
    assert_eq!(answer, "OK");
    // tollgate's change listener subscribes on whatever master it follows.
    let channel = tollgate::store::redis::Keys::new("tollgate:", false).channel;
    assert!(
        eventually(Duration::from_secs(15), || async {
            let numsub: Vec<(String, i64)> = set.replica.cmd(&["PUBSUB", "NUMSUB", &channel]);
            numsub.first().is_some_and(|(_, n)| *n >= 1)
        })
        .await,
        "tollgate moved to the promoted replica"
    );
    eprintln!("manual failover followed after {:?}", asked.elapsed());
    assert_eq!(set.named_master_port(), Some(set.replica.port));
    let after = hammer(&t, |t| t.limited.load(Ordering::SeqCst) >= 10).await;
    assert_eq!(after.fallbacks.load(Ordering::SeqCst), 0);
    assert_eq!(
        20 + after.admitted.load(Ordering::SeqCst),
        N,
        "the limit is filled exactly"
    );
    assert_eq!(request_usage(&t, &id).await, N);
    let role: Vec<redis::Value> = set.replica.cmd(&["ROLE"]);
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );
}

/// Kills the primary after `run_for` of checks with the replica `lag` behind; returns
/// (acknowledged, held by the promoted replica, acknowledged within lag + 250 ms of the
/// kill, median check latency).
async fn loss_at_lag(
    lag: Duration,
    wait_replicas: u32,
    run_for: Duration,
) -> (u64, u64, u64, Duration) {
    let mut set = SentinelSet::start_lagging(Some(lag)).await;
    let (_running, t) = tollgate(&set, |s| {
        s.store_timeout_ms = 2000;
        s.redis_wait_replicas = wait_replicas;
    })
    .await;
    let id = t.create(limited_config(10_000_000)).await;
    // Give the config time to reach the replica, so only counts are at stake.
    tokio::time::sleep(lag * 2).await;
    let started = Instant::now();
    let tally = hammer(&t, move |_| started.elapsed() >= run_for).await;
    let killed = Instant::now();
    set.primary.kill();
    let failover = kill_primary_and_follow(&mut set, &t, killed).await;
    let acknowledged = tally.admitted.load(Ordering::SeqCst);
    let held = request_usage(&t, &id).await;
    let mut at = tally.admitted_at.lock().clone();
    let recent = at
        .iter()
        .filter(|(when, _)| {
            killed.saturating_duration_since(*when) <= lag + Duration::from_millis(250)
        })
        .count() as u64;
    at.sort_by_key(|(_, latency)| *latency);
    let median = at.get(at.len() / 2).map_or(Duration::ZERO, |(_, l)| *l);
    eprintln!(
        "replication lag {lag:?}, --redis-wait-replicas {wait_replicas}: {acknowledged} admitted \
         ({recent} in the last lag + 250 ms), {held} on the promoted replica, {} lost; median \
         check {median:?}; switched after {:?}, followed after {:?} (down-after {DOWN_AFTER_MS} ms)",
        acknowledged.saturating_sub(held),
        failover.switched,
        failover.followed
    );
    (acknowledged, held, recent, median)
}

/// Without WAIT, what a crash loses is what the master acknowledged within the
/// replication lag before it: more than nothing, no more than that window's admissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_loses_the_counts_within_the_replication_lag() {
    let (acknowledged, held, recent, _) =
        loss_at_lag(Duration::from_millis(200), 0, Duration::from_millis(1500)).await;
    let lost = acknowledged.saturating_sub(held);
    assert!(
        lost > 0,
        "a 200 ms lag loses counts ({acknowledged} admitted, {held} held)"
    );
    assert!(
        lost <= recent,
        "only the last lag's counts are lost ({lost} > {recent})"
    );
}

/// With `--redis-wait-replicas 1`, a check is admitted only once the replica has its
/// count: a SIGKILLed primary loses none of them, at the same lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_replicas_loses_no_acknowledged_count() {
    let lag = Duration::from_millis(200);
    let (acknowledged, held, _, median) = loss_at_lag(lag, 1, Duration::from_millis(1500)).await;
    assert!(acknowledged > 0, "checks were admitted");
    assert!(
        held >= acknowledged,
        "{acknowledged} acknowledged, only {held} survived the failover"
    );
    assert!(
        median >= lag,
        "an admitted check waited for the replica ({median:?})"
    );
}

/// The binary refuses what it cannot do, saying why, from flags and from variables.
#[test]
fn refuses_wait_in_cluster_mode_and_sentinel_without_a_master_name() {
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} {envs:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(
        &[
            "--redis-mode",
            "cluster",
            "--redis-url",
            "redis://127.0.0.1:1",
            "--redis-wait-replicas",
            "1",
        ],
        &[],
    );
    assert!(err.contains("--redis-wait-replicas"), "{err}");
    let err = run(
        &["--redis-url", "redis://127.0.0.1:1,redis://127.0.0.1:2"],
        &[("TOLLGATE_REDIS_MODE", "sentinel")],
    );
    assert!(err.contains("--sentinel-master"), "{err}");
    let err = run(
        &["--redis-url", "redis://127.0.0.1:1,redis://127.0.0.1:2"],
        &[("TOLLGATE_SENTINEL_MASTER", "m")],
    );
    assert!(err.contains("--redis-mode"), "{err}");
}
