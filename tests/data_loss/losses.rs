//! Data lost in place: FLUSHALL and a restart without persistence, eviction under
//! `allkeys-lru`, a whole fleet restarted onto an empty Redis (restored from the replicas'
//! state files), and a Redis that rejects writes (OOM: `/ready` is 503).

use super::{CONFIGS, MAX, admitted, fill, metric, replica, restored, stored_configs, tenant};
use crate::common::{RedisServer, eventually, free_port};
use std::time::Duration;

/// FLUSHALL, and a restart without persistence: two replicas keep enforcing, one of them
/// restores the configs, and a full tenant gets at most MAX more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_and_restart_without_persistence_lose_only_counters() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let (a, b) = (replica(&url, &[]).await, replica(&url, &[]).await);
    for i in 0..3 {
        a.create(tenant(i).0).await;
    }
    let synced =
        || async { b.get(&format!("{CONFIGS}?from_memory=true")).await.body["total_count"] == 3 };
    assert!(eventually(Duration::from_secs(5), synced).await);
    fill(&a, 0).await;

    let _: () = redis.cmd(&["FLUSHALL"]);
    let again = admitted(&[&a, &b], 0, 4 * MAX).await;
    assert!(again <= MAX, "{again} admitted after FLUSHALL (max {MAX})");
    assert!(
        restored(&redis, 3).await,
        "configs not restored after FLUSHALL"
    );

    fill(&b, 1).await;
    tokio::task::block_in_place(|| redis.restart());
    let again = admitted(&[&a, &b], 1, 4 * MAX).await;
    assert!(again <= MAX, "{again} admitted after a restart (max {MAX})");
    assert!(
        restored(&redis, 3).await,
        "configs not restored after a restart"
    );
    let losses = metric(&a, "tollgate_store_data_loss_total").await
        + metric(&b, "tollgate_store_data_loss_total").await;
    assert!(losses >= 2.0, "data-loss events counted: {losses}");
    // Tenant 2 was never touched: still limited to exactly MAX.
    assert_eq!(admitted(&[&a, &b], 2, 2 * MAX).await, MAX);
}

/// `allkeys-lru` refuses to start unless overridden; with the override, configs evicted
/// under memory pressure are restored and full tenants stay bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_under_allkeys_lru_is_survived() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _: () = redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--redis-url", &url])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("allkeys-lru")
            && err.contains("noeviction")
            && err.contains("--allow-evicting-redis"),
        "{err}"
    );

    // Polling rarely, the replica leaves the configs idle, so LRU picks them (its clock
    // ticks in seconds); a store-backed list syncs it after the eviction.
    let a = replica(
        &url,
        &["--allow-evicting-redis", "--config-poll-ms", "60000"],
    )
    .await;
    const TENANTS: usize = 20;
    for i in 0..TENANTS {
        a.create(tenant(i).0).await;
        fill(&a, i).await;
    }
    let _: () = redis.cmd(&["CONFIG", "SET", "maxmemory-samples", "10"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Memory pressure: junk written after the configs until Redis has evicted them.
    let used: String = redis.cmd(&["INFO", "memory"]);
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let limit = (used + 4 * 1024 * 1024).to_string();
    let _: () = redis.cmd(&["CONFIG", "SET", "maxmemory", &limit]);
    let junk = "x".repeat(64 * 1024);
    let mut evicted = false;
    for k in 0..2000 {
        let _: () = redis.cmd(&["SET", &format!("junk:{k}"), &junk]);
        let exists: i64 = redis.cmd(&["EXISTS", "tollgate:configs"]);
        if exists == 0 {
            evicted = true;
            break;
        }
    }
    assert!(evicted, "Redis never evicted the configs");
    let mut again = 0;
    for i in 0..TENANTS {
        again = again.max(admitted(&[&a], i, 2 * MAX).await);
    }
    assert!(
        again <= MAX,
        "a full tenant got {again} more after eviction (max {MAX})"
    );
    assert_eq!(a.get(CONFIGS).await.status, 200);
    assert!(
        restored(&redis, TENANTS).await,
        "configs not restored after eviction"
    );
}

/// A whole fleet restarted onto an empty Redis restores its configs from the replicas'
/// state files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_restarted_onto_an_empty_redis_restores_from_state_files() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = (0..2)
        .map(|i| {
            dir.path()
                .join(format!("replica-{i}.json"))
                .display()
                .to_string()
        })
        .collect();
    let ids = {
        let a = replica(&url, &["--state-file", &files[0]]).await;
        let b = replica(&url, &["--state-file", &files[1]]).await;
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(a.create(tenant(i).0).await);
        }
        let written = || async {
            files.iter().all(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                ids.iter().all(|id| text.contains(id.as_str()))
            })
        };
        assert!(
            eventually(Duration::from_secs(10), written).await,
            "state files not written: {}",
            b.stderr()
        );
        ids
    }; // both replicas stop here
    tokio::task::block_in_place(|| redis.restart());
    assert_eq!(stored_configs(&redis), 0);
    let a = replica(&url, &["--state-file", &files[0]]).await;
    let b = replica(&url, &["--state-file", &files[1]]).await;
    assert!(
        restored(&redis, 3).await,
        "configs not restored from state files"
    );
    for id in &ids {
        assert_eq!(b.get(&format!("{CONFIGS}/{id}")).await.status, 200);
    }
    assert_eq!(admitted(&[&a, &b], 0, 2 * MAX).await, MAX);
}

/// `/ready` is 503 while Redis rejects writes (here OOM: maxmemory reached with
/// noeviction), and says why; it recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_redis_rejects_writes() {
    let redis = RedisServer::start();
    let a = replica(&redis.url(), &[]).await;
    let _: () = redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let ready = a.get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let why = ready.body["store"].as_str().unwrap_or_default();
    assert!(
        why.contains("rejects writes") && why.contains("OOM"),
        "{why}"
    );
    assert!(metric(&a, "tollgate_store_writable").await == 0.0);
    let _: () = redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    let back = || async { a.get("/ready").await.status == 200 };
    assert!(eventually(Duration::from_secs(5), back).await);
    assert!(metric(&a, "tollgate_store_writable").await == 1.0);
}
