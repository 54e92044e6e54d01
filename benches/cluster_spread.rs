//! Redis CPU per check on each shard of a 3-master Redis Cluster, beside one Redis node:
//! does the load spread?
//!
//! ```text
//! cargo bench --bench cluster_spread -- [--duration S] [--concurrency N] [--keys N]
//!     [--counter-slots 0,3]
//! ```
//!
//! Per topology (one `redis-server`; a cluster of 3 masters, no replicas, so each
//! master's CPU is its shard's checks alone) it starts an in-process tollgate on it,
//! creates one config per virtual key (`--keys`, 1,000) with a request and a token limit
//! too high to deny, then drives `POST /v1/check` for a random virtual key from
//! `--concurrency` (32) closed-loop workers for `--duration` (10) seconds, and reads each
//! redis-server's CPU from `/proc/<pid>/stat`. A second pass adds a global config that
//! every check also matches: one hot slot on one shard, and a cross-shard check (two
//! script calls) whenever the key's config sits elsewhere. The cluster runs once per
//! `--counter-slots` value (`--cluster-counter-slots`: 0 = one slot per config, the
//! earlier layout; 3 = the default), so one run puts the layouts side by side. Never
//! run by CI.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tollgate_testkit::proc_stats::cpu_ticks;
use tollgate_testkit::{Client, RedisServer, cluster};

struct Opts {
    duration: u64,
    concurrency: usize,
    keys: usize,
    counter_slots: Vec<u16>,
}

fn opts() -> Opts {
    let mut o = Opts {
        duration: 10,
        concurrency: 32,
        keys: 1000,
        counter_slots: vec![0, 3],
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--duration" => o.duration = pair[1].parse().unwrap(),
            "--concurrency" => o.concurrency = pair[1].parse().unwrap(),
            "--keys" => o.keys = pair[1].parse().unwrap(),
            "--counter-slots" => {
                o.counter_slots = pair[1].split(',').map(|n| n.parse().unwrap()).collect()
            }
            _ => {}
        }
    }
    o
}

fn pid_of(port: u16) -> u32 {
    let info: String = cluster::cmd(port, &["INFO", "server"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Checks answered, and per redis port its CPU µs per check.
async fn drive(
    o: &Opts,
    url: &str,
    cluster: Option<u16>,
    ports: &[u16],
    global: bool,
) -> (u64, f64, Vec<(u16, f64)>) {
    let mut s = tollgate_testkit::settings();
    s.redis_url = Some(url.to_string());
    if let Some(slots) = cluster {
        s.redis_mode = tollgate::settings::RedisMode::Cluster;
        s.cluster_counter_slots = slots;
    }
    s.key_prefix = format!("bench{}{}:", global as u8, cluster.unwrap_or(0));
    let running = tollgate::start(s).await.expect("tollgate starts");
    let client = Client::new(format!("http://{}", running.addr));
    let limits = json!({"request_max_limit": 1_000_000_000i64, "request_reset_duration": "1h",
                        "token_max_limit": 1_000_000_000i64, "token_reset_duration": "1h"});
    for k in 0..o.keys {
        client
            .create(json!({"model_name": "m", "scope": "virtual_key", "scope_id": format!("vk-{k}"), "rate_limit": limits}))
            .await;
    }
    if global {
        client
            .create(json!({"model_name": "m", "rate_limit": limits}))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let batches_before = batches(&client).await;
    let pids: Vec<u32> = ports.iter().map(|&p| pid_of(p)).collect();
    let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(o.duration);
    let mut workers = Vec::new();
    for w in 0..o.concurrency {
        let (client, done, keys) = (client.clone(), done.clone(), o.keys);
        workers.push(tokio::spawn(async move {
            let mut i = w * 7919;
            while Instant::now() < until {
                i = (i * 1_103_515_245 + 12_345) % (1 << 31);
                let vk = format!("vk-{}", i % keys);
                let a = client
                    .check(json!({"model": "m", "virtual_key": vk, "tokens": 1}))
                    .await;
                assert_eq!(a.status, 200, "{:?}", a.body);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let checks = done.load(Ordering::Relaxed);
    let batches_after = batches(&client).await;
    let mean_batch =
        (batches_after.0 - batches_before.0) / (batches_after.1 - batches_before.1).max(1.0);
    let tick_us = 1e6 / 100.0; // CLK_TCK
    let per_port = ports
        .iter()
        .zip(pids.iter().zip(before))
        .map(|(&port, (&pid, b))| (port, (cpu_ticks(pid) - b) as f64 * tick_us / checks as f64))
        .collect();
    running.stop(Duration::from_secs(1)).await.unwrap();
    (checks, mean_batch, per_port)
}

/// Ops and script calls so far (`tollgate_store_batch_size` sum and count).
async fn batches(client: &Client) -> (f64, f64) {
    let text = reqwest::get(client.url("/metrics"))
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
    (
        value("tollgate_store_batch_size_sum"),
        value("tollgate_store_batch_size_count"),
    )
}

fn print(label: &str, secs: u64, (checks, mean_batch, per_port): &(u64, f64, Vec<(u16, f64)>)) {
    let total: f64 = per_port.iter().map(|(_, us)| us).sum();
    let shards: Vec<String> = per_port.iter().map(|(_, us)| format!("{us:.1}")).collect();
    println!(
        "| {label} | {:.0} | {} | {total:.1} | {mean_batch:.1} |",
        *checks as f64 / secs as f64,
        shards.join(" / ")
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = opts();
    println!(
        "| topology | checks/s | Redis CPU µs per check, per node | total | ops per script call |"
    );
    println!("|---|---|---|---|---|");
    for global in [false, true] {
        let what = if global {
            "key + global config"
        } else {
            "key config only"
        };
        let single = RedisServer::start();
        let r = drive(&o, &single.url(), None, &[single.port], global).await;
        print(&format!("1 node, {what}"), o.duration, &r);
        let c = cluster::Cluster::start_with_replicas(0);
        let masters = c.masters();
        for &slots in &o.counter_slots {
            let r = drive(&o, &c.url(), Some(slots), &masters, global).await;
            let layout = match slots {
                0 => "one slot per config".to_string(),
                n => format!("{n} counter slots"),
            };
            print(&format!("3 shards ({layout}), {what}"), o.duration, &r);
        }
    }
}
