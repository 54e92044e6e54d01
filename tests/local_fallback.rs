//! `--on-store-error local`: three tollgate processes share a limit of 300 of which 100
//! are used; Redis stops answering (killed and restarted with its data, or blackholed by
//! a proxy of the test's own) under concurrent load. The fleet admits at most the 200
//! left, each replica its share; once Redis answers, the counters include every local
//! admission exactly once. A replica restarted during the outage (with `--state-file`)
//! keeps its share and still charges what it admitted before.

mod common;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/local_fleet.rs"]
mod local_fleet;
#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;

use common::redis_server::redis_server_binary;
use common::{Process, RedisServer, eventually};
use local_fleet::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A Redis that keeps its data across a kill (append-only file, fsync on every write).
fn durable_redis() -> RedisServer {
    let args = ["--appendonly", "yes", "--appendfsync", "always"].map(String::from);
    RedisServer::start_with(&redis_server_binary(), &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_the_fleet_admits_at_most_what_was_left_and_charges_it_once() {
    let mut redis = durable_redis();
    let url = redis.url();
    let procs = fleet(&url, &[]).await;
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
        sum(
            &procs,
            "tollgate_local_decisions_total",
            &[("decision", "admitted")]
        )
        .await,
        outage.admitted_locally as f64
    );

    tokio::task::block_in_place(|| redis.restart());
    assert!(all_charged(&procs).await, "the journals were charged");
    // A replay whose answer came too late is sent again: found already charged.
    assert_eq!(
        charged(&procs).await,
        outage.admitted_locally as f64,
        "every local admission went to Redis"
    );
    assert_eq!(used_in_redis(&procs[1], &id).await, 100 + 198);
    redis_gives_exactly(&procs, 2).await;
    assert_eq!(used_in_redis(&procs[0], &id).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_through_recovery_never_past_the_limit() {
    let mut redis = durable_redis();
    let url = redis.url();
    let procs = fleet(&url, &[]).await;
    let id = limit_with_100_used(&procs).await;

    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let procs: Vec<common::Client> = procs.iter().map(|p| p.client.clone()).collect();
        let stop = stop.clone();
        // The load holds the clients only (the processes stay here).
        tokio::spawn(async move { load_clients(&procs, stop).await })
    };
    // Kill once Redis admitted some of the 200 left, well before all of them (a fixed
    // delay may see them all admitted on a fast run, leaving nothing to decide locally).
    assert!(
        eventually(Duration::from_secs(10), || async {
            used_in_redis(&procs[0], &id).await >= 120
        })
        .await,
        "Redis admitted checks before the kill"
    );
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
    // Each replica's share comes from the usage it saw last, in its own last answer
    // before the kill: what the others admitted after that (at most the checks in flight
    // then, 4 per replica) is not in it. The stale-used weakness, stated in the docs.
    assert!(
        admitted <= 200 + 12,
        "admitted {admitted} of the 200 left: {t:?}"
    );
    assert!(t.admitted_locally > 0 && t.refused_by_redis > 0, "{t:?}");
    // Every admission is counted; a check Redis ran just before the kill whose answer
    // the kill cut off was also decided locally: counted twice (at most the 12 in
    // flight), which errs on the safe side.
    let used = used_in_redis(&procs[0], &id).await;
    println!("Redis counts {used}");
    let admitted = admitted as i64;
    assert!(
        (100 + admitted..=100 + admitted + 12).contains(&used),
        "Redis counts {used} for {admitted} admitted on 100 used: {t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_blackholed_the_fleet_admits_at_most_what_was_left_and_charges_it_once() {
    let redis = RedisServer::start();
    let proxy = tcp_proxy::Proxy::start(redis.port).await;
    let url = proxy.url();
    let procs = fleet(&url, &[]).await;
    let id = limit_with_100_used(&procs).await;

    proxy.blackhole(true);
    let outage = load_for(&procs, 5).await;
    println!("Redis blackholed 5 s under load: {outage:?}");
    assert_eq!(outage.admitted_by_redis + outage.refused_by_redis, 0);
    assert_eq!(outage.admitted_locally, 3 * 66, "{outage:?}");

    proxy.blackhole(false);
    assert!(all_charged(&procs).await, "the journals were charged");
    // A replay whose answer came too late is sent again: found already charged.
    assert_eq!(
        charged(&procs).await,
        outage.admitted_locally as f64,
        "every local admission went to Redis"
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
            std::fs::read_to_string(&journal)
                .is_ok_and(|s| s.matches("\"id\":\"local:").count() == 66)
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
        charged(&procs[2..]).await,
        66.0,
        "the restarted replica charged what it admitted before its restart"
    );
    assert_eq!(used_in_redis(&procs[0], &id).await, 100 + 198);
    redis_gives_exactly(&procs, 2).await;
}
