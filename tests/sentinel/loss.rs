//! What a failover loses: the counts acknowledged within the replication lag before the
//! crash, and none with `--redis-wait-replicas 1`.

use super::{hammer, kill_primary_and_follow, limited_config, request_usage, tollgate};
use crate::common::sentinel::{DOWN_AFTER_MS, SentinelSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
