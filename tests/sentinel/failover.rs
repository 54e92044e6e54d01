//! Following the master: through a SIGKILL of the primary while checks run, and through a
//! manual `SENTINEL FAILOVER` while none do.

use super::{
    CONCURRENCY, Outcome, check, hammer, kill_primary_and_follow, limited_config, outcome,
    request_usage, tollgate,
};
use crate::common::eventually;
use crate::common::sentinel::{MASTER_NAME, SentinelSet};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
            // The node drops its clients while it changes role: ask again.
            let numsub: Option<Vec<(String, i64)>> =
                set.replica.try_cmd(&["PUBSUB", "NUMSUB", &channel]);
            numsub.is_some_and(|n| n.first().is_some_and(|(_, n)| *n >= 1))
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
            // The node drops its clients while it changes role: ask again.
            let numsub: Option<Vec<(String, i64)>> =
                set.replica.try_cmd(&["PUBSUB", "NUMSUB", &channel]);
            numsub.is_some_and(|n| n.first().is_some_and(|(_, n)| *n >= 1))
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
