//! The config plane at scale: 10k, 100k and 1M configs on one Redis, three
//! tollgate replicas (release binaries, separate processes).
//!
//! ```text
//! cargo bench --bench config_plane -- --configs 10000,100000,1000000
//! ```
//!
//! Per size it starts its own `redis-server` on a free port, writes the configs as a
//! re-seed does (chunks of 1,000), then measures:
//!
//! - each replica's start to `/ready`, and its RSS once ready (`/proc/PID/status`);
//! - creates through replica A (p50/p99), and how long each takes to be enforced by
//!   replica B (a dry-run check on B that matches it; p50/p99);
//! - store-backed list pages on B (`?limit=25`, and with a `scope_id` filter);
//! - checks on replica C, idle and then while A writes 100 configs/s (p50/p99, and how
//!   many fell back to `--on-store-error`).
//!
//! Never run by CI; nothing asserts on time.

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tollgate::model::validate::create_config;
use tollgate::store::ConfigLog;
use tollgate::store::redis::{RedisOptions, RedisStore};
use tollgate_testkit::proc_stats::rss_mb;
use tollgate_testkit::{Process, RedisServer, tollgate_binary};

fn body(i: usize) -> Value {
    json!({"model_name": format!("filler-{i}"), "scope": "virtual_key",
           "scope_id": format!("vk-{i}"),
           "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1m",
                          "token_max_limit": 100000, "token_reset_duration": "1h"},
           "budgets": [{"max_limit": 10, "reset_duration": "1d"}]})
}

async fn seed(url: &str, n: usize) -> Duration {
    let store = RedisStore::connect(RedisOptions {
        url: url.into(),
        key_prefix: "tollgate:".into(),
        timeout: Duration::from_secs(30),
        bulk_timeout: Duration::from_secs(120),
        allow_evicting: false,
        topology: tollgate::store::redis::Topology::Standalone,
        wait_replicas: 0,
    })
    .unwrap();
    let now = chrono::Utc::now();
    let configs = (0..n)
        .map(|i| create_config(serde_json::from_value(body(i)).unwrap(), now).unwrap())
        .collect();
    let started = Instant::now();
    store.reseed(None, configs, 0).await.unwrap();
    started.elapsed()
}

struct Replica {
    proc: Process,
    base: String,
}

/// A replica (the release binary, its own defaults) and how long it took to be ready.
async fn start_replica(url: &str) -> (Replica, Duration) {
    let started = Instant::now();
    let patience = Duration::from_secs(300);
    let proc = Process::launch(
        &tollgate_binary(),
        &["--redis-url", url],
        &[("RUST_LOG", "warn")],
        patience,
    )
    .await;
    let replica = Replica {
        base: proc.client.base.clone(),
        proc,
    };
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{}/ready", replica.base)).send().await
            && r.status() == 200
        {
            return (replica, started.elapsed());
        }
        assert!(started.elapsed() < patience, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Checks on `base` for `for_`, 4 at a time; (latency µs histogram, fallbacks).
async fn checks(base: &str, for_: Duration) -> (Histogram<u64>, usize) {
    let mut tasks = Vec::new();
    for w in 0..4 {
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut h = hist();
            let mut fallbacks = 0;
            let end = Instant::now() + for_;
            let mut i = w;
            while Instant::now() < end {
                let body = json!({"model": format!("filler-{}", i % 1000),
                                  "virtual_key": format!("vk-{}", i % 1000), "tokens": 1});
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/v1/check"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                h.record(t.elapsed().as_micros() as u64).unwrap();
                fallbacks += v.get("fallback").is_some() as usize;
                i += 4;
            }
            (h, fallbacks)
        }));
    }
    let mut all = hist();
    let mut fallbacks = 0;
    for t in tasks {
        let (h, f) = t.await.unwrap();
        all.add(h).unwrap();
        fallbacks += f;
    }
    (all, fallbacks)
}

async fn run(n: usize) {
    let redis = RedisServer::start();
    let url = redis.url();
    let seeded = seed(&url, n).await;
    let mut replicas = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..3 {
        let (r, took) = start_replica(&url).await;
        starts.push(took);
        replicas.push(r);
    }
    let rss: Vec<f64> = replicas.iter().map(|r| rss_mb(r.proc.pid())).collect();
    let (a, b, c) = (&replicas[0].base, &replicas[1].base, &replicas[2].base);
    let http = reqwest::Client::new();

    // Creates on A, each enforced on B.
    let (mut create, mut visible) = (hist(), hist());
    for i in 0..200 {
        let model = format!("bench-{n}-{i}");
        let t = Instant::now();
        let r = http
            .post(format!("{a}/api/governance/model-configs"))
            .json(&json!({"model_name": model,
                          "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        create.record(t.elapsed().as_micros() as u64).unwrap();
        loop {
            let v: Value = http
                .post(format!("{b}/v1/check"))
                .json(&json!({"model": model, "dry_run": true}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["limits"].as_array().is_some_and(|l| !l.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        visible.record(t.elapsed().as_micros() as u64).unwrap();
    }

    // List pages on B, store-backed.
    let (mut page, mut filtered) = (hist(), hist());
    for i in 0..100 {
        let t = Instant::now();
        let r = http
            .get(format!(
                "{b}/api/governance/model-configs?limit=25&offset={}",
                i * 25
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        page.record(t.elapsed().as_micros() as u64).unwrap();
        let t = Instant::now();
        let r = http
            .get(format!(
                "{b}/api/governance/model-configs?scope_id=vk-{}",
                i * 7
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        filtered.record(t.elapsed().as_micros() as u64).unwrap();
    }

    // Checks on C, idle, then while A writes 100 configs/s.
    let (idle, idle_fallbacks) = checks(c, Duration::from_secs(10)).await;
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for i in 0..1000 {
                tick.tick().await;
                let _ = http
                    .post(format!("{a}/api/governance/model-configs"))
                    .json(&json!({"model_name": format!("churn-{n}-{i}"),
                                  "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"}}))
                    .send()
                    .await;
            }
        })
    };
    let (busy, busy_fallbacks) = checks(c, Duration::from_secs(10)).await;
    writer.abort();

    println!("\n== {n} configs ==");
    println!("seeded in {:.1} s", seeded.as_secs_f64());
    for (i, (s, r)) in starts.iter().zip(&rss).enumerate() {
        println!(
            "replica {i}: start to ready {:.2} s, RSS {r:.0} MB",
            s.as_secs_f64()
        );
    }
    println!(
        "create p50 {:.2} ms p99 {:.2} ms | enforced on another replica p50 {:.2} ms p99 {:.2} ms",
        ms(&create, 0.5),
        ms(&create, 0.99),
        ms(&visible, 0.5),
        ms(&visible, 0.99)
    );
    println!(
        "list page p50 {:.2} ms p99 {:.2} ms | filtered by scope_id p50 {:.2} ms p99 {:.2} ms",
        ms(&page, 0.5),
        ms(&page, 0.99),
        ms(&filtered, 0.5),
        ms(&filtered, 0.99)
    );
    println!(
        "checks idle: {} p50 {:.2} ms p99 {:.2} ms, {idle_fallbacks} fallbacks | during 100 writes/s: {} p50 {:.2} ms p99 {:.2} ms, {busy_fallbacks} fallbacks",
        idle.len(),
        ms(&idle, 0.5),
        ms(&idle, 0.99),
        busy.len(),
        ms(&busy, 0.5),
        ms(&busy, 0.99)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("cargo bench --bench config_plane -- [--configs 10000,100000,1000000]");
        return;
    }
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--configs")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(|n| n.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    for n in sizes {
        run(n).await;
    }
}
