//! Redis CPU per `batch.lua` call and per op, by batch size: what a call costs Redis
//! whatever it carries (the fixed cost that a fleet, whose replicas each batch little,
//! pays on every check) against what each op adds.
//!
//! ```text
//! cargo bench --bench script_cost -- [--duration 5] [--conns 8] [--batches 1,2,4,10]
//!     [--prefill 65] [--alt-script FILE]… [--rounds 1]
//! ```
//!
//! It starts its own `redis-server`, compiles the 9-limit check of the load bench's
//! scenarios b–e (3 matching configs, global + virtual key + user, each with a request
//! and a token window of 1 min and a daily budget) exactly as tollgate sends it
//! (`ops::batch_parts`), fills the windows for `--prefill` seconds (the steady state:
//! every window holds a whole window of sub-buckets), then for each batch size and
//! each script calls it straight from `--conns` closed-loop workers, each on its own
//! connection (8: what Redis sees from a fleet of 8 replicas, one call in flight each),
//! and reads redis-server's CPU (utime + stime) from `/proc`. Scripts: the built-in
//! `scripts::BATCH`, each `--alt-script` (a composed `batch.lua`, e.g. an earlier
//! release's, to compare side by side in one run), and `floor`: a script that returns
//! at once with the same KEYS and ARGV (the call's cost to Redis before any Lua runs:
//! the socket, parsing, the script's set-up). `--rounds N` repeats the whole table
//! (the machine may be shared). Never run by CI; nothing asserts on time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tollgate::limits::{CompiledConfig, MatchKey, Snapshot};
use tollgate::model::validate::create_config;
use tollgate::store::redis::ops::{ConfigRef, Op, OpKind, batch_parts};
use tollgate::store::redis::packed_limits::packed_limits;
use tollgate::store::redis::{Keys, scripts};
use tollgate_testkit::RedisServer;
use tollgate_testkit::proc_stats::cpu_ticks;

const PREFIX: &str = "tollgate:";
const FLOOR: &str = "return {1}";

struct Opts {
    duration: Duration,
    conns: usize,
    batches: Vec<usize>,
    prefill: Duration,
    alt: Vec<String>,
    rounds: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        duration: Duration::from_secs(5),
        conns: 8,
        batches: vec![1, 2, 4, 10],
        prefill: Duration::from_secs(65),
        alt: Vec::new(),
        rounds: 1,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--duration" => o.duration = Duration::from_secs_f64(value().parse().unwrap()),
            "--conns" => o.conns = value().parse().unwrap(),
            "--batches" => o.batches = value().split(',').map(|b| b.parse().unwrap()).collect(),
            "--prefill" => o.prefill = Duration::from_secs_f64(value().parse().unwrap()),
            "--alt-script" => o.alt.push(value()),
            "--rounds" => o.rounds = value().parse().unwrap(),
            "--bench" => {
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2)
            }
        }
        i += 2;
    }
    o
}

/// The 9-limit check of the load bench (`CHECK_BODY` against scenario b's configs).
fn check_op() -> Op {
    let limits = serde_json::json!({
        "rate_limit": {
            "request_max_limit": 1_000_000_000u64, "request_reset_duration": "1m",
            "token_max_limit": 1_000_000_000_000u64, "token_reset_duration": "1m"
        },
        "budgets": [{"max_limit": 1_000_000.0, "reset_duration": "1d"}]
    });
    let bodies = [
        serde_json::json!({"model_name": "*", "scope": "global"}),
        serde_json::json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "vk-1"}),
        serde_json::json!({"model_name": "*", "scope": "user", "scope_id": "u-1"}),
    ];
    let now = chrono::Utc::now();
    let configs = bodies
        .into_iter()
        .map(|mut b| {
            for (k, v) in limits.as_object().unwrap() {
                b[k] = v.clone();
            }
            create_config(serde_json::from_value(b).unwrap(), now).unwrap()
        })
        .collect();
    let snapshot = Snapshot::build(1, configs);
    let key = MatchKey {
        model: "gpt-4o",
        provider: None,
        virtual_key: Some("vk-1"),
        user: Some("u-1"),
    };
    let matched: Vec<&CompiledConfig> = snapshot.matching(&key).into_iter().map(|c| &**c).collect();
    assert_eq!(matched.iter().map(|c| c.limits().len()).sum::<usize>(), 9);
    let keys = Keys::new(PREFIX, false);
    Op {
        kind: OpKind::Check,
        deadline: 0,
        amounts: [1, 10, 1_000_000],
        reserved_at: 0,
        configs: matched
            .iter()
            .map(|c| ConfigRef {
                key: keys.counters(&c.config.id),
                limits: packed_limits(c).clone(),
                n_limits: c.limits().len(),
            })
            .collect(),
        marker: None,
        lease: None,
    }
}

/// Calls `script` with `call` from `conns` workers until `until`; returns the calls made.
async fn drive(
    url: &str,
    conns: usize,
    script: &Arc<redis::Script>,
    call: &Arc<(Vec<String>, Vec<Vec<u8>>)>,
    until: Instant,
) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let client = redis::Client::open(url).unwrap();
    let mut workers = Vec::new();
    for _ in 0..conns {
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let (script, call, done) = (script.clone(), call.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let mut inv = script.prepare_invoke();
                for k in &call.0 {
                    inv.key(k);
                }
                for a in &call.1 {
                    inv.arg(a);
                }
                let reply: redis::RedisResult<redis::Value> = inv.invoke_async(&mut conn).await;
                reply.expect("the script runs");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    done.load(Ordering::Relaxed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = opts();
    let redis = RedisServer::start();
    let pid = redis.pid().expect("redis-server runs");
    let url = redis.url();
    let op = check_op();
    let mut scripts: Vec<(String, Arc<redis::Script>)> = vec![(
        "built-in".into(),
        Arc::new(redis::Script::new(scripts::BATCH)),
    )];
    for path in &o.alt {
        let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        scripts.push((path.clone(), Arc::new(redis::Script::new(&source))));
    }
    scripts.push(("floor".into(), Arc::new(redis::Script::new(FLOOR))));
    if !o.prefill.is_zero() {
        let single = Arc::new(batch_parts(
            &Keys::new(PREFIX, false).usage_markers(),
            std::slice::from_ref(&op),
        ));
        let calls = drive(
            &url,
            o.conns,
            &scripts[0].1,
            &single,
            Instant::now() + o.prefill,
        )
        .await;
        println!(
            "prefilled the windows: {calls} calls in {:.0} s",
            o.prefill.as_secs_f64()
        );
    }
    println!(
        "\n| script | ops per call | calls/s | Redis CPU µs per call | per op |\n|---|---|---|---|---|"
    );
    for _ in 0..o.rounds {
        for &b in &o.batches {
            let ops: Vec<Op> = (0..b).map(|_| op.clone()).collect();
            let call = Arc::new(batch_parts(&Keys::new(PREFIX, false).usage_markers(), &ops));
            for (label, script) in &scripts {
                let before = cpu_ticks(pid);
                let started = Instant::now();
                let calls = drive(&url, o.conns, script, &call, started + o.duration).await;
                let secs = started.elapsed().as_secs_f64();
                let us = (cpu_ticks(pid) - before) as f64 * 1e4 / calls.max(1) as f64;
                println!(
                    "| {label} | {b} | {:.0} | {us:.1} | {:.1} |",
                    calls as f64 / secs,
                    us / b as f64
                );
            }
        }
    }
}
