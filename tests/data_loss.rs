//! Configs outlive Redis's data (the section of that name in docs/redis-topologies.md).
//! Real `redis-server` processes that the tests start, flush, restart, fill until they
//! evict, and fail over (through a TCP proxy of the test's own, the "virtual IP"
//! operators put in front of Redis). After each loss, a tenant that was at its limit is
//! admitted at most `max` more times (its counter restarts from zero), never without
//! bound, and the configs are back in Redis.

mod common;

use common::{Client, Process, RedisServer, eventually, free_port};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

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

/// A TCP proxy with a switchable backend: the "virtual IP" in front of Redis. Switching
/// cuts every open connection, as a failover does.
struct Proxy {
    addr: SocketAddr,
    backend: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(Mutex::new(backend));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (backend, conns) = (backend.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let to = *backend.lock().unwrap();
                    let conn = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    conns.lock().unwrap().push(conn);
                }
            })
        };
        Proxy {
            addr,
            backend,
            conns,
            accept,
        }
    }

    fn switch(&self, to: SocketAddr) {
        *self.backend.lock().unwrap() = to;
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

fn addr(r: &RedisServer) -> SocketAddr {
    format!("127.0.0.1:{}", r.port).parse().unwrap()
}

/// A failover to a replica that missed the last writes (its data is older: same epoch,
/// lower version) and then to an empty one: the configs written after the replica fell
/// behind are restored, and the full tenant stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_lagging_or_empty_replica_restores_configs() {
    let primary = RedisServer::start();
    let lagging = RedisServer::start();
    let empty = RedisServer::start();
    let proxy = Proxy::start(addr(&primary)).await;
    let url = format!("redis://{}", proxy.addr);
    let (a, b) = (replica(&url, &[]).await, replica(&url, &[]).await);
    a.create(tenant(0).0).await;
    let port = primary.port.to_string();
    let _: () = lagging.cmd(&["REPLICAOF", "127.0.0.1", &port]);
    let synced = || async {
        let info: String = lagging.cmd(&["INFO", "replication"]);
        info.contains("master_link_status:up") && stored_configs(&lagging) == 1
    };
    assert!(eventually(Duration::from_secs(10), synced).await);
    let _: () = lagging.cmd(&["REPLICAOF", "NO", "ONE"]);
    // Written after the replica stopped following.
    for i in 1..3 {
        a.create(tenant(i).0).await;
    }
    fill(&a, 2).await;

    proxy.switch(addr(&lagging));
    let again = admitted(&[&a, &b], 2, 4 * MAX).await;
    assert!(
        again <= MAX,
        "{again} admitted after the failover (max {MAX})"
    );
    assert!(
        restored(&lagging, 3).await,
        "configs written after the replica fell behind were not restored"
    );

    fill(&b, 1).await;
    proxy.switch(addr(&empty));
    let again = admitted(&[&a, &b], 1, 4 * MAX).await;
    assert!(
        again <= MAX,
        "{again} admitted after a failover to an empty replica"
    );
    assert!(restored(&empty, 3).await);
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

/// Incremental sync: with 10,000 configs, another replica's write costs this replica
/// one changed config, not a reload (counted by its metrics, not timed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_applies_only_what_changed() {
    let redis = RedisServer::start();
    let url = redis.url();
    seed(&url, 10_000).await;
    let (a, b) = (replica(&url, &[]).await, replica(&url, &[]).await);
    assert_eq!(
        b.get(&format!("{CONFIGS}?from_memory=true&limit=1"))
            .await
            .body["total_count"],
        10_000
    );
    let full_before = metric(&b, "tollgate_config_syncs_total{kind=\"full\"}").await;
    let applied_before = metric(&b, "tollgate_config_changes_applied_total").await;
    let id = a.create(tenant(0).0).await;
    let seen = || async {
        b.get(&format!("{CONFIGS}?from_memory=true&limit=1"))
            .await
            .body["total_count"]
            == 10_001
    };
    assert!(eventually(Duration::from_secs(5), seen).await);
    assert_eq!(a.delete(&format!("{CONFIGS}/{id}")).await.status, 200);
    let gone = || async {
        b.get(&format!("{CONFIGS}?from_memory=true&limit=1"))
            .await
            .body["total_count"]
            == 10_000
    };
    assert!(eventually(Duration::from_secs(5), gone).await);
    let full_after = metric(&b, "tollgate_config_syncs_total{kind=\"full\"}").await;
    let applied_after = metric(&b, "tollgate_config_changes_applied_total").await;
    assert_eq!(full_after, full_before, "no full reload for one change");
    assert_eq!(
        applied_after - applied_before,
        2.0,
        "one create and one delete applied"
    );
}

/// 10,000 configs written as a re-seed would (chunks of 1,000), before any replica runs.
async fn seed(url: &str, n: usize) {
    use tollgate::store::ConfigLog;
    let store = tollgate::store::RedisStore::connect(tollgate::store::redis::RedisOptions {
        bulk_timeout: Duration::from_secs(60),
        ..tollgate::store::redis::RedisOptions::standalone(url, "tollgate:", Duration::from_secs(5))
    })
    .unwrap();
    let now = chrono::Utc::now();
    let configs = (0..n)
        .map(|i| {
            let body = json!({"model_name": format!("filler-{i}"), "scope": "virtual_key",
                              "scope_id": format!("vk-{i}"), "rate_limit": limited(10)});
            tollgate::model::validate::create_config(serde_json::from_value(body).unwrap(), now)
                .unwrap()
        })
        .collect();
    let outcome = store.reseed(None, configs, 0).await.unwrap();
    assert!(matches!(
        outcome,
        tollgate::store::ReseedOutcome::Seeded { .. }
    ));
}

/// A proxy that, once frozen, silences the pub/sub connections open at that moment (no
/// RST, as when a host or a NAT entry vanishes); everything else passes.
struct FreezingProxy {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl FreezingProxy {
    async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let accept = {
            let frozen = frozen.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(backend).await else {
                        continue;
                    };
                    // Only connections older than the freeze can be frozen.
                    let silenced = Arc::new(AtomicBool::new(frozen.load(Ordering::SeqCst)));
                    let subscriber = Arc::new(AtomicBool::new(false));
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let gate = Gate {
                        frozen: frozen.clone(),
                        born_frozen: silenced,
                        subscriber,
                    };
                    tokio::spawn(pump(cr, sw, gate.clone(), true));
                    tokio::spawn(pump(sr, cw, gate, false));
                }
            })
        };
        FreezingProxy {
            addr,
            frozen,
            accept,
        }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[derive(Clone)]
struct Gate {
    frozen: Arc<AtomicBool>,
    born_frozen: Arc<AtomicBool>,
    subscriber: Arc<AtomicBool>,
}

impl Gate {
    fn closed(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
            && !self.born_frozen.load(Ordering::SeqCst)
            && self.subscriber.load(Ordering::SeqCst)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: Gate,
    upstream: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if upstream
            && buf[..n]
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
        {
            gate.subscriber.store(true, Ordering::SeqCst);
        }
        while gate.closed() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A subscription whose connection goes silent is noticed and re-made within a few
/// seconds, whatever the poll: changes keep arriving by pub/sub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_remade() {
    let redis = RedisServer::start();
    let a = replica(&redis.url(), &[]).await;
    let proxy = FreezingProxy::start(addr(&redis)).await;
    // b polls once a minute: only pub/sub can tell it of changes in time.
    let b = replica(
        &format!("redis://{}", proxy.addr),
        &["--config-poll-ms", "60000"],
    )
    .await;
    let has = |n: u64| {
        let b = &b;
        move || async move {
            b.get(&format!("{CONFIGS}?from_memory=true")).await.body["total_count"] == n
        }
    };
    a.create(tenant(0).0).await;
    assert!(eventually(Duration::from_secs(5), has(1)).await);
    proxy.frozen.store(true, Ordering::SeqCst);
    a.create(tenant(1).0).await;
    assert!(
        eventually(Duration::from_secs(8), has(2)).await,
        "the silent subscription was not re-made: {}",
        b.stderr()
    );
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
