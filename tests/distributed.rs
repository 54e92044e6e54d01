//! Several tollgates sharing one Redis enforce one set of limits: configs propagate,
//! concurrent checks across processes admit exactly the limit, reservations settle
//! without overshoot, and replicas with skewed clocks agree (time comes from Redis).

mod common;

use common::{Backend, Client, Process, RedisServer, Tollgate, eventually};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const CONFIGS: &str = "/api/governance/model-configs";

/// Correctness runs must not depend on machine speed: a slow Redis call waits instead of
/// falling back, and a fallback could never admit.
const PATIENT: [&str; 4] = ["--store-timeout-ms", "10000", "--on-store-error", "deny"];

/// Waits until `client`'s replica has config `id` in its snapshot.
async fn sees(client: &Client, id: &str) -> bool {
    let a = client
        .get(&format!("{CONFIGS}?from_memory=true&limit=100"))
        .await;
    a.body["model_configs"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["id"] == id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_see_each_others_writes_within_a_second() {
    let a = Tollgate::start(Backend::Redis).await;
    // Poll slowly on B so the pub/sub notification is what makes it fast.
    let b_running = a.replica(|s| s.config_poll_ms = 5_000).await;
    let b = Client::new(format!("http://{}", b_running.addr));
    let within = Duration::from_secs(1);

    let id = a.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}})).await;
    assert!(
        eventually(within, || sees(&b, &id)).await,
        "B saw A's create within 1s"
    );
    assert_eq!(b.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(
        b.check(json!({"model": "m"})).await.status,
        429,
        "B enforces A's config"
    );
    assert_eq!(
        a.check(json!({"model": "m"})).await.status,
        429,
        "one shared counter"
    );

    let put = b
        .put(
            &format!("{CONFIGS}/{id}"),
            &json!({"rate_limit": {"request_max_limit": 3, "request_reset_duration": "1h"}}),
        )
        .await;
    assert_eq!(put.status, 200);
    assert!(
        eventually(within, || async {
            a.check(json!({"model": "m", "dry_run": true})).await.status == 200
        })
        .await,
        "A applied B's update within 1s"
    );
    // The direct GET on A reads the store, so it is current at once.
    assert_eq!(a.config(&id).await["rate_limit"]["request_max_limit"], 3);

    assert_eq!(a.delete(&format!("{CONFIGS}/{id}")).await.status, 200);
    assert!(
        eventually(within, || async { !sees(&b, &id).await }).await,
        "B dropped the deleted config within 1s"
    );
    assert_eq!(
        b.check(json!({"model": "m"})).await.body["limits"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_alone_propagates_writes() {
    // Pub/sub is the fast path; the version poll must be enough on its own. Writing the
    // config straight into Redis (no announcement) is what a lost notification looks like.
    let t = Tollgate::start_with(Backend::Redis, |s| s.config_poll_ms = 200).await;
    let redis = t.redis.as_ref().unwrap();
    let other = Tollgate::start_with(Backend::Memory, |_| {}).await;
    let id = other.create(json!({"model_name": "quiet"})).await;
    let config = other.config(&id).await;
    let stored = json!({
        "id": id, "model_name": "quiet", "provider": null, "scope": "global", "scope_id": null,
        "calendar_aligned": false, "budgets": [], "rate_limit": null,
        "created_at": config["created_at"], "updated_at": config["updated_at"], "revision": 1
    });
    let _: () = redis.cmd(&["HSET", "tollgate:configs", &id, &stored.to_string()]);
    let _: i64 = redis.cmd(&["INCR", "tollgate:config_version"]);
    assert!(
        eventually(Duration::from_secs(2), || sees(&t, &id)).await,
        "the poll picked up the change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefixes_separate_deployments_on_one_redis() {
    let a = Tollgate::start_with(Backend::Redis, |s| s.key_prefix = "team-a:".into()).await;
    let b_running = a.replica(|s| s.key_prefix = "team-b:".into()).await;
    let b = Client::new(format!("http://{}", b_running.addr));
    a.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}})).await;
    b.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}})).await;
    assert_eq!(a.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(
        b.check(json!({"model": "m"})).await.status,
        200,
        "b's counter is its own"
    );
    assert_eq!(b.get(CONFIGS).await.body["total_count"], 1);
    let keys: Vec<String> = a.redis.as_ref().unwrap().cmd(&["KEYS", "*"]);
    assert!(
        keys.iter()
            .all(|k| k.starts_with("team-a:") || k.starts_with("team-b:")),
        "{keys:?}"
    );
}

/// `n` tollgate processes on `redis`, patient and fail-closed.
async fn fleet(redis: &RedisServer, n: usize) -> Vec<Process> {
    let url = redis.url();
    let args = [&["--redis-url", url.as_str()][..], &PATIENT].concat();
    let mut procs = Vec::new();
    for _ in 0..n {
        procs.push(Process::spawn(&args, &[]).await);
    }
    procs
}

async fn all_see(procs: &[Process], id: &str) {
    for p in procs {
        assert!(
            eventually(Duration::from_secs(2), || sees(p, id)).await,
            "replica never saw {id}"
        );
    }
}

/// Three tollgate processes, one Redis, request limit 50: 300 concurrent checks admit 50,
/// with checks coalesced into shared script calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_admit_exactly_the_limit() {
    let redis = RedisServer::start();
    let procs = fleet(&redis, 3).await;
    let id = procs[0]
        .create(json!({"model_name": "gpt-4o", "rate_limit": {"request_max_limit": 50, "request_reset_duration": "1h"}}))
        .await;
    all_see(&procs, &id).await;
    let clients: Vec<Client> = procs.iter().map(|p| p.client.clone()).collect();
    let start = Arc::new(tokio::sync::Barrier::new(300));
    let mut tasks = Vec::new();
    for i in 0..300 {
        let client = clients[i % 3].clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            client
                .check(json!({"model": "gpt-4o", "virtual_key": format!("vk-{i}")}))
                .await
                .status
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let allowed = statuses.iter().filter(|&&s| s == 200).count();
    let denied = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(
        (allowed, denied),
        (50, 250),
        "exactly the limit is admitted across 3 processes"
    );
    // Coalescing was on: some script call carried more than one check.
    let mut calls = 0.0;
    let mut ops = 0.0;
    let mut remembered = 0.0;
    for p in &procs {
        let text = reqwest::get(p.client.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map_or(0.0, |v| v.trim().parse().unwrap())
        };
        calls += value("tollgate_store_batch_size_count");
        ops += value("tollgate_store_batch_size_sum");
        remembered += value("tollgate_refusals_remembered_total");
    }
    // Checks refused while the limit was known full never reached the store.
    assert!(
        ops + remembered >= 300.0 && calls < ops,
        "{ops} ops in {calls} calls, {remembered} refusals remembered"
    );
    for p in &procs {
        assert_eq!(
            p.config(&id).await["rate_limit"]["request_current_usage"],
            50
        );
    }
}

/// Reserve an estimate at check time, settle the actual afterwards, from many workers on
/// three processes at once: the window never holds more than the limit, and ends holding
/// exactly what was really used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_and_settle_never_exceeds_the_token_limit() {
    const LIMIT: i64 = 20_000;
    const ESTIMATE: i64 = 500;
    let redis = RedisServer::start();
    let procs = fleet(&redis, 3).await;
    let id = procs[0]
        .create(json!({"model_name": "m", "rate_limit": {"token_max_limit": LIMIT, "token_reset_duration": "1h"}}))
        .await;
    all_see(&procs, &id).await;
    let used_for_real = Arc::new(AtomicI64::new(0));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut workers = Vec::new();
    for w in 0..24 {
        let client = procs[w % 3].client.clone();
        let used_for_real = used_for_real.clone();
        workers.push(tokio::spawn(async move {
            for n in 0..12 {
                let a = client.check(json!({"model": "m", "tokens": ESTIMATE})).await;
                if a.status != 200 {
                    assert_eq!(a.status, 429, "{}", a.body);
                    continue;
                }
                // The upstream call used somewhere between 20% and 100% of the estimate.
                let actual = ESTIMATE * (1 + ((w * 7 + n * 13) % 5) as i64) / 5;
                tokio::time::sleep(Duration::from_millis(((w + n) % 4) as u64)).await;
                let report = json!({"model": "m", "tokens": actual, "reserved_tokens": ESTIMATE, "request_id": format!("w{w}-n{n}"),
                                    "reserved_at_ms": a.body["reserved_at_ms"]});
                let r = client.post("/v1/usage", &report).await;
                assert_eq!(r.status, 200, "{}", r.body);
                used_for_real.fetch_add(actual, Ordering::SeqCst);
            }
        }));
    }
    // Watch the shared counter while the workers run.
    let watcher = {
        let client = procs[1].client.clone();
        let running = running.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while running.load(Ordering::SeqCst) {
                let used = client.config(&id).await["rate_limit"]["token_current_usage"]
                    .as_i64()
                    .unwrap();
                peak = peak.max(used);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        })
    };
    for w in workers {
        w.await.unwrap();
    }
    running.store(false, Ordering::SeqCst);
    let peak = watcher.await.unwrap();
    let real = used_for_real.load(Ordering::SeqCst);
    let counted = procs[2].config(&id).await["rate_limit"]["token_current_usage"]
        .as_i64()
        .unwrap();
    assert!(peak <= LIMIT, "the window held {peak} > {LIMIT}");
    assert_eq!(
        counted, real,
        "after settlement the window holds exactly the real usage"
    );
    assert!(real <= LIMIT);
    assert!(real > LIMIT / 2, "the test exercised the limit ({real})");
}

/// One replica's wall clock is two hours ahead (libfaketime). Windows and periods are
/// computed on Redis time, so both replicas see the same usage and decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_skewed_clocks_agree() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = [&["--redis-url", url.as_str()][..], &PATIENT].concat();
    let normal = Process::spawn(&args, &[]).await;
    let skewed = Process::spawn_wrapped(
        Some(&["faketime", "-f", "+2h"]),
        &args,
        &[("FAKETIME_DONT_FAKE_MONOTONIC", "1")],
    )
    .await;
    // Proof that the clock really is skewed in that process: its log timestamps.
    let logged = skewed.stderr();
    let stamp = logged
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("a log line: {logged}"));
    let skew = chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("{stamp}: {e}"))
        .signed_duration_since(chrono::Utc::now())
        .num_minutes();
    assert!(
        (115..=125).contains(&skew),
        "faketime skews by ~2h, got {skew} min"
    );
    // Yet what it writes is stamped with Redis's time, so a budget grid anchored at
    // creation runs on the clock the scripts count with.
    let probe = skewed.create(json!({"model_name": "probe"})).await;
    let created = skewed.config(&probe).await["created_at"]
        .as_str()
        .unwrap()
        .to_string();
    let created = chrono::DateTime::parse_from_rfc3339(&created).unwrap();
    let off = created
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!(off.abs() < 60, "created_at on Redis time, off by {off} s");

    let id = normal
        .create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 4, "request_reset_duration": "1m"},
                       "budgets": [{"max_limit": 1.0, "reset_duration": "1h"}]}))
        .await;
    assert!(eventually(Duration::from_secs(2), || sees(&skewed, &id)).await);
    for client in [
        &normal.client,
        &skewed.client,
        &normal.client,
        &skewed.client,
    ] {
        assert_eq!(
            client
                .check(json!({"model": "m", "cost": 0.2}))
                .await
                .status,
            200
        );
    }
    for client in [&normal.client, &skewed.client] {
        let a = client.check(json!({"model": "m"})).await;
        assert_eq!(a.status, 429, "{}", a.body);
        assert_eq!(a.body["reason"], "request_limited");
        let retry = a.body["retry_after_ms"].as_i64().unwrap();
        assert!(
            retry > 50_000 && retry <= 60_000,
            "same window on both replicas: {retry}"
        );
    }
    let (n, s): (Value, Value) = (normal.config(&id).await, skewed.config(&id).await);
    assert_eq!(n["rate_limit"]["request_current_usage"], 4);
    assert_eq!(s["rate_limit"]["request_current_usage"], 4);
    assert_eq!(
        n["budgets"][0]["current_usage"],
        s["budgets"][0]["current_usage"]
    );
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(
            v["rate_limit"]["request_last_reset"].as_str().unwrap(),
        )
        .unwrap()
    };
    let apart = at(&s)
        .signed_duration_since(at(&n))
        .num_milliseconds()
        .abs();
    assert!(
        apart < 5_000,
        "window starts come from Redis time, not 2h apart: {apart}ms"
    );
}

/// Counters expire when idle, but never before the usage they hold has left its window
/// or period: a 1s window's hash is gone 2s after the last check, while a hash that
/// also holds a daily budget lives to the budget's period end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_counters_expire_and_live_ones_do_not() {
    let t = Tollgate::start(Backend::Redis).await;
    let redis = t.redis.as_ref().unwrap();
    let window_only = t
        .create(json!({"model_name": "w", "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1s"}}))
        .await;
    let with_budget = t
        .create(json!({"model_name": "b", "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1s"},
                       "budgets": [{"max_limit": 10, "reset_duration": "1d"}]}))
        .await;
    let pttl = |id: &str| -> i64 { redis.cmd(&["PTTL", &format!("tollgate:c:{id}")]) };
    for _ in 0..3 {
        assert_eq!(t.check(json!({"model": "w"})).await.status, 200);
        assert_eq!(
            t.check(json!({"model": "b", "cost": 0.5})).await.status,
            200
        );
    }
    let ttl = pttl(&window_only);
    assert!(
        ttl > 0 && ttl <= 1_000 + 34 + 1_000,
        "window-only TTL {ttl}"
    );
    assert!(
        pttl(&with_budget) > 23 * 3_600_000,
        "the budget keeps its hash for its period"
    );
    // A later check in a new sub-bucket must not shorten the budget's lifetime.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        t.check(json!({"model": "b", "cost": 0.5})).await.status,
        200
    );
    assert!(pttl(&with_budget) > 23 * 3_600_000);
    assert!(
        eventually(Duration::from_secs(4), || async {
            pttl(&window_only) == -2
        })
        .await,
        "the idle window's hash expired"
    );
    let budget = t.config(&with_budget).await;
    assert_eq!(
        budget["budgets"][0]["current_usage"], 2.0,
        "all four charges still counted"
    );
}
