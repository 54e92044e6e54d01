//! End-to-end load test of `POST /v1/check` against a real Redis, side by side with the
//! ceiling: the same `check.lua` call, with the same KEYS/ARGV, sent straight to the
//! same Redis at the same concurrency.
//!
//! ```text
//! cargo bench --bench load -- --scenario all --concurrency 32 --duration 10
//! ```
//!
//! Per scenario it starts its own `redis-server` on a free port and the release
//! `tollgate` binary that cargo built alongside this bench (separate processes, as in
//! production: the sidecar's CPU, threads and syscalls are its own and can be profiled
//! with `perf -p`), creates the configs through the management API, then
//!
//! 1. drives `POST /v1/check` over HTTP/1.1 keep-alive connections (one per worker) for
//!    `--warmup` + `--duration` seconds, recording latency in an HDR histogram;
//! 2. calls the check script directly on the same Redis with a shared multiplexed
//!    connection (what tollgate uses) and with one connection per worker;
//!
//! and prints checks/s, p50/p99/p99.9, the share of 200/429, CPU used per process, and
//! tollgate's throughput as a share of the better direct figure. Closed loop: each worker
//! sends its next request when the previous answer arrived.
//!
//! Scenarios: `a` 1 matching config; `b` 3 matching configs (global + virtual key +
//! user, each with request, token and budget limits); `c` like `b` with 10,000 configs
//! loaded; `d` like `b` with two tollgate processes on one Redis, the load split across
//! them; `e` like `b` with a fleet of `--fleet N` (8) tollgate processes, the connections
//! spread over them (32 connections: 4 each), where little coalesces. After each
//! scenario, the same-write-count reference (a script of 6 × INCRBY +
//! PEXPIRE) runs from `redis-benchmark` on the same Redis at the same concurrency, and a
//! last table puts Redis CPU per check (from `/proc` of redis-server) beside it. Flags: `--scenario a,b|all`, `--concurrency N`, `--duration S`, `--warmup S`,
//! `--rate R` (open loop: R requests/s in all on a fixed schedule, latency measured from
//! each request's scheduled time, instead of the default closed loop),
//! `--prefill S` (before measuring, call the script directly for S seconds so every
//! sliding window holds a whole window of sub-buckets: the steady state; default 65),
//! `--client-threads N`, `--tollgate-threads N`, `--configs N` (scenario c),
//! `--lease-ms MS` (every tollgate leases its hot limits: `docs/leases.md`),
//! `--perf DIR` (record the tollgate processes with `perf` during the measured phase),
//! `--quiet CORES` / `--quiet-patience S` (before each measured phase, wait up to S
//! seconds until other processes use at most CORES; the machine may be shared),
//! `--max-foreign CORES` / `--attempts N` (measure a phase again, up to N times in all,
//! when other processes used more than CORES during it),
//! `--tollgate PATH`, `--redis-server PATH`, `--redis-arg 'NAME VALUE'` (repeatable, e.g.
//! `--redis-arg 'hash-max-listpack-entries 64'`), `--alt-script FILE` (also measure
//! this version of the check script — composed as `scripts::BATCH` is — directly,
//! right after the built-in one, on the same counters).
//!
//! Never run by CI; nothing asserts on time.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::limits::{CompiledConfig, MatchKey, Snapshot};
use tollgate::model::validate::create_config;
use tollgate::store::ConfigWrites;
use tollgate::store::redis::ops::{ConfigRef, Op, OpKind, batch_parts};
use tollgate::store::redis::packed_limits::packed_limits;
use tollgate::store::redis::{Keys, RedisOptions, RedisStore, scripts};
use tollgate_testkit::proc_stats::{TICKS_PER_SEC, cpu_ticks};
use tollgate_testkit::{Process, RedisServer};

const KEY_PREFIX: &str = "tollgate:";
const CHECK_BODY: &str =
    r#"{"model":"gpt-4o","virtual_key":"vk-1","user":"u-1","tokens":10,"cost":0.001}"#;
/// The amounts of `CHECK_BODY` as `batch.lua` receives them: requests, tokens, cost in
/// nano-dollars (the direct calls carry no deadline: the ceiling never gives up).
const CHECK_AMOUNTS: [i64; 3] = [1, 10, 1_000_000];

// ---------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Opts {
    scenarios: Vec<char>,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    prefill: Duration,
    /// Open loop at this many requests per second in all (default: closed loop).
    rate: Option<f64>,
    client_threads: usize,
    tollgate_threads: Option<usize>,
    /// `--lease-ms` for every tollgate (leases; off by default).
    lease_ms: Option<u64>,
    filler_configs: usize,
    perf_dir: Option<PathBuf>,
    /// Before each measured phase, wait until other processes use at most this many cores…
    quiet: f64,
    /// …for at most this many seconds.
    quiet_patience: u64,
    /// A phase during which other processes used more than this many cores…
    max_foreign: f64,
    /// …is measured again, up to this many times in all.
    attempts: usize,
    tollgate_bin: PathBuf,
    redis_bin: String,
    /// Extra `redis-server` arguments, e.g. `--hash-max-listpack-entries 64`.
    redis_args: Vec<String>,
    /// Another version of `batch.lua` (its library fragments, check and usage prepended) to
    /// measure directly next to the built-in one, on the same Redis and counters.
    alt_script: Option<PathBuf>,
    /// Tollgate processes of scenario `e`.
    fleet: usize,
}

fn usage(code: i32) -> ! {
    eprintln!(
        "usage: cargo bench --bench load -- [--scenario a,b,c,d,e|all] [--fleet 8] [--concurrency 32] \
         [--duration 10] [--warmup 2] [--prefill 65] [--rate R] [--client-threads 1] [--tollgate-threads N] [--lease-ms MS] \
         [--configs 10000] [--perf DIR] [--quiet 0.1] [--quiet-patience 120] [--max-foreign 0.3] [--attempts 3] [--tollgate PATH] [--redis-server PATH] [--redis-arg 'NAME VALUE'] [--alt-script FILE]"
    );
    std::process::exit(code)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        scenarios: vec!['a', 'b', 'c', 'd', 'e'],
        concurrency: 32,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        prefill: Duration::from_secs(65),
        rate: None,
        client_threads: 1,
        tollgate_threads: None,
        lease_ms: None,
        filler_configs: 10_000,
        perf_dir: None,
        quiet: 0.1,
        quiet_patience: 120,
        max_foreign: 0.3,
        attempts: 3,
        tollgate_bin: PathBuf::from(env!("CARGO_BIN_EXE_tollgate")),
        redis_bin: std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
        redis_args: Vec::new(),
        alt_script: None,
        fleet: 8,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        // `cargo bench` passes `--bench` to every bench binary.
        if flag == "--bench" {
            continue;
        }
        let mut value = || args.next().unwrap_or_else(|| usage(2));
        let secs = |v: String| Duration::from_secs_f64(v.parse().unwrap_or_else(|_| usage(2)));
        let num = |v: String| v.parse::<usize>().unwrap_or_else(|_| usage(2));
        match flag.as_str() {
            "--scenario" => {
                let v = value();
                o.scenarios = if v == "all" {
                    vec!['a', 'b', 'c', 'd', 'e']
                } else {
                    v.split(',')
                        .map(|s| match s.trim() {
                            s @ ("a" | "b" | "c" | "d" | "e") => s.chars().next().unwrap(),
                            _ => usage(2),
                        })
                        .collect()
                }
            }
            "--concurrency" => o.concurrency = num(value()).max(1),
            "--fleet" => o.fleet = num(value()).max(1),
            "--duration" => o.duration = secs(value()),
            "--warmup" => o.warmup = secs(value()),
            "--prefill" => o.prefill = secs(value()),
            "--rate" => o.rate = Some(value().parse().unwrap_or_else(|_| usage(2))),
            "--client-threads" => o.client_threads = num(value()).max(1),
            "--tollgate-threads" => o.tollgate_threads = Some(num(value()).max(1)),
            "--lease-ms" => o.lease_ms = Some(num(value()) as u64),
            "--configs" => o.filler_configs = num(value()).max(3),
            "--quiet" => o.quiet = value().parse().unwrap_or_else(|_| usage(2)),
            "--max-foreign" => o.max_foreign = value().parse().unwrap_or_else(|_| usage(2)),
            "--attempts" => o.attempts = num(value()).max(1),
            "--quiet-patience" => o.quiet_patience = num(value()) as u64,
            "--perf" => o.perf_dir = Some(PathBuf::from(value())),
            "--tollgate" => o.tollgate_bin = PathBuf::from(value()),
            "--redis-server" => o.redis_bin = value(),
            "--alt-script" => o.alt_script = Some(PathBuf::from(value())),
            "--redis-arg" => o
                .redis_args
                .extend(value().split_whitespace().map(String::from)),
            "-h" | "--help" => usage(0),
            _ => usage(2),
        }
    }
    o
}

// ---------------------------------------------------------------------------------------
// Processes (started by the harness, `tollgate_testkit`)

/// `--redis-arg 'NAME VALUE'` pairs as `redis-server` arguments: names get their `--`.
fn redis_args(extra: &[String]) -> Vec<String> {
    extra
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i % 2 == 0 && !a.starts_with("--") {
                format!("--{a}")
            } else {
                a.clone()
            }
        })
        .collect()
}

/// A tollgate process (the harness's `Process`, killed when dropped) and its address.
struct Tollgate {
    proc: Process,
    addr: SocketAddr,
}

/// `--tollgate` on `redis_url` with its own defaults, once it is ready.
async fn start_tollgate(opts: &Opts, redis_url: &str) -> Tollgate {
    let threads = opts.tollgate_threads.map(|t| t.to_string());
    let lease_ms = opts.lease_ms.map(|t| t.to_string());
    let mut args = vec!["--redis-url", redis_url];
    if let Some(t) = &threads {
        args.extend(["--worker-threads", t]);
    }
    if let Some(ms) = &lease_ms {
        args.extend(["--lease-ms", ms]);
    }
    let proc = Process::launch(
        &opts.tollgate_bin,
        &args,
        &[("RUST_LOG", "warn")],
        Duration::from_secs(20),
    )
    .await;
    let addr = proc.addr();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("http://{addr}/ready")).send().await
            && r.status().is_success()
        {
            return Tollgate { proc, addr };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "tollgate did not become ready: {}",
        std::fs::read_to_string(&proc.log).unwrap_or_default()
    );
}

/// Busy and idle ticks of the whole machine, from the first line of /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy, get(3) + get(4))
}

/// CPU used by processes this tool did not start, in cores, over `window`.
fn foreign_load(window: Duration) -> f64 {
    let (b0, _) = machine_ticks();
    std::thread::sleep(window);
    let (b1, _) = machine_ticks();
    (b1 - b0) as f64 / TICKS_PER_SEC / window.as_secs_f64()
}

/// Waits (up to `patience`) until other processes use less than `max_cores`, since the
/// machine may be shared (builds, test suites); says so if it never got quiet.
fn wait_until_quiet(max_cores: f64, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let load = foreign_load(Duration::from_millis(500));
        if load <= max_cores {
            return;
        }
        if Instant::now() >= deadline {
            println!(
                "  WARNING: machine still busy ({:.0}% CPU used by other processes); measuring anyway",
                load * 100.0
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------------------------
// Configs

fn limits() -> Value {
    json!({
        "rate_limit": {
            "request_max_limit": 1_000_000_000u64, "request_reset_duration": "1m",
            "token_max_limit": 1_000_000_000_000u64, "token_reset_duration": "1m"
        },
        "budgets": [{"max_limit": 1_000_000.0, "reset_duration": "1d"}]
    })
}

fn with_limits(mut body: Value) -> Value {
    for (k, v) in limits().as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The configs that match `CHECK_BODY`.
fn matching_bodies(scenario: char) -> Vec<Value> {
    let vk = json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "vk-1"});
    let bodies = if scenario == 'a' {
        vec![vk]
    } else {
        vec![
            json!({"model_name": "*", "scope": "global"}),
            vk,
            json!({"model_name": "*", "scope": "user", "scope_id": "u-1"}),
        ]
    };
    bodies.into_iter().map(with_limits).collect()
}

/// Configs that do not match `CHECK_BODY`: other virtual keys, other users, and global
/// configs of other models.
fn filler_body(i: usize) -> Value {
    with_limits(match i % 3 {
        0 => {
            json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": format!("vk-x{i}")})
        }
        1 => json!({"model_name": "*", "scope": "user", "scope_id": format!("u-x{i}")}),
        _ => json!({"model_name": format!("model-{i}"), "provider": "openai"}),
    })
}

fn redis_store(url: &str) -> RedisStore {
    RedisStore::connect(RedisOptions {
        bulk_timeout: Duration::from_secs(60),
        ..RedisOptions::standalone(url, KEY_PREFIX, Duration::from_secs(5))
    })
    .unwrap()
}

/// Writes `n` non-matching configs with the store layer behind the management API's
/// create (`RedisStore::create_config`: same validation, same Lua script), before any
/// tollgate runs. Creating 10,000 through HTTP is quadratic today (every create rebuilds
/// the whole snapshot), which is measured separately, not here.
async fn seed_fillers(url: &str, n: usize) {
    let store = redis_store(url);
    let now = chrono::Utc::now();
    let mut epoch = None;
    for i in 0..n {
        let cfg = create_config(serde_json::from_value(filler_body(i)).unwrap(), now).unwrap();
        epoch = Some(
            store
                .create_config(&cfg, epoch.as_deref())
                .await
                .unwrap()
                .epoch,
        );
    }
}

async fn create_via_api(addr: SocketAddr, body: &Value) -> Duration {
    let started = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/governance/model-configs"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "create failed: {status} {text}");
    started.elapsed()
}

async fn ready_configs(addr: SocketAddr) -> u64 {
    let r = reqwest::get(format!("http://{addr}/ready")).await;
    match r {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["configs"].as_u64()),
        Err(_) => None,
    }
    .unwrap_or(0)
}

/// The KEYS and ARGV that tollgate sends for `CHECK_BODY` when the check goes alone: the
/// configs as tollgate loads them, matched by the same snapshot code, in the same order
/// (mirrors `RedisStore::check`), as one op of `batch.lua`.
async fn script_call(url: &str) -> (Vec<String>, Vec<Vec<u8>>, usize) {
    let store = redis_store(url);
    let configs = tollgate::store::all_configs(&store).await.unwrap();
    let snapshot = Snapshot::build(1, configs);
    let key = MatchKey {
        model: "gpt-4o",
        provider: None,
        virtual_key: Some("vk-1"),
        user: Some("u-1"),
    };
    let matched: Vec<&CompiledConfig> = snapshot.matching(&key).into_iter().map(|c| &**c).collect();
    let keys = Keys::new(KEY_PREFIX, false);
    let op = Op {
        kind: OpKind::Check,
        deadline: 0,
        amounts: CHECK_AMOUNTS,
        reserved_at: 0,
        configs: matched
            .iter()
            .map(|c| ConfigRef {
                key: keys.counters(&c.config.id),
                limits: packed_limits(c).clone(),
                n_limits: c.limits.len(),
            })
            .collect(),
        marker: None,
        lease: None,
    };
    let (key_names, args) = batch_parts(&keys.usage_markers(), &[op]);
    let limits = matched.iter().map(|c| c.limits.len()).sum();
    (key_names, args, limits)
}

// ---------------------------------------------------------------------------------------
// Load

#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
    /// Open loop (`--rate`): each worker sends on a fixed schedule, one request every
    /// `interval` from `first`, whether or not earlier answers are late.
    interval: Option<Duration>,
    first: Instant,
}

impl Window {
    fn new(opts: &Opts) -> Self {
        let now = Instant::now();
        let measure_from = now + opts.warmup;
        Window {
            measure_from,
            end: measure_from + opts.duration,
            interval: opts
                .rate
                .map(|r| Duration::from_secs_f64(opts.concurrency as f64 / r)),
            first: now,
        }
    }

    /// Worker `i` of `n`: open-loop schedules are spread evenly over one interval.
    fn for_worker(mut self, i: usize, n: usize) -> Self {
        if let Some(iv) = self.interval {
            self.first += iv.mul_f64(i as f64 / n as f64);
        }
        self
    }

    /// When the next request starts. Open loop: if the worker is behind schedule (an
    /// earlier answer was late), the scheduled time, so latency counts the wait behind
    /// slow answers too (no coordinated omission); if it is early, it sleeps and the
    /// request starts when it is actually sent (tokio's timer fires up to 1 ms late,
    /// which is not the server's doing).
    async fn next_start(&mut self) -> Instant {
        match self.interval {
            None => Instant::now(),
            Some(iv) => {
                let at = self.first;
                self.first += iv;
                if Instant::now() >= at {
                    return at;
                }
                tokio::time::sleep_until(at.into()).await;
                Instant::now()
            }
        }
    }
}

struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    denied: u64,
    other: u64,
    errors: u64,
    /// Answers given by `--on-store-error` instead of Redis (a `fallback` field): 200 or
    /// 429 without any counting, so they are reported apart and never as allowed checks.
    fallback: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            // Nanoseconds, 1 ns .. 60 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
            ok: 0,
            denied: 0,
            other: 0,
            errors: 0,
            fallback: 0,
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.hist.add(&o.hist).unwrap();
        self.ok += o.ok;
        self.denied += o.denied;
        self.other += o.other;
        self.fallback += o.fallback;
        self.errors += o.errors;
    }

    fn record(&mut self, started: Instant, w: &Window) -> bool {
        if started < w.measure_from {
            return false;
        }
        let ns = started.elapsed().as_nanos() as u64;
        self.hist.saturating_record(ns.max(1));
        true
    }
}

/// `limits`: how many limits every answer must list; an answer with another number (a
/// config missing from tollgate's snapshot) is counted as `other`, never as allowed.
async fn http_worker(addr: SocketAddr, limits: usize, mut w: Window) -> Tally {
    let mut t = Tally::new();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let host = addr.to_string();
    let body = Bytes::from_static(CHECK_BODY.as_bytes());
    loop {
        let started = w.next_start().await;
        if started >= w.end {
            break;
        }
        if sender.ready().await.is_err() {
            t.errors += 1;
            break;
        }
        let req = Request::post("/v1/check")
            .header(HOST, &host)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let status = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.into_body().collect().await {
                    Ok(b) => {
                        let b = b.to_bytes();
                        let fallback = b.windows(10).any(|w| w == b"\"fallback\"");
                        let listed = b.windows(11).filter(|w| w == b"\"config_id\"").count();
                        Some(if fallback {
                            0
                        } else if listed != limits {
                            1
                        } else {
                            status
                        })
                    }
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        if t.record(started, &w) {
            match status {
                Some(0) => t.fallback += 1,
                Some(200) => t.ok += 1,
                Some(429) => t.denied += 1,
                Some(_) => t.other += 1,
                None => t.errors += 1,
            }
        }
        if status.is_none() {
            break;
        }
    }
    t
}

/// How a direct worker reaches Redis: the multiplexed connection shared by all workers
/// (as tollgate does), or a connection of its own.
enum Conn {
    Shared(redis::aio::ConnectionManager),
    Own(Box<redis::Client>),
}

async fn script_worker(
    conn: Conn,
    script: Arc<redis::Script>,
    call: Arc<(Vec<String>, Vec<Vec<u8>>)>,
    w: Window,
) -> Tally {
    match conn {
        Conn::Shared(c) => script_loop(c, script, call, w).await,
        Conn::Own(client) => {
            let c = client.get_multiplexed_async_connection().await.unwrap();
            script_loop(c, script, call, w).await
        }
    }
}

async fn script_loop<C: redis::aio::ConnectionLike + Send>(
    mut conn: C,
    script: Arc<redis::Script>,
    call: Arc<(Vec<String>, Vec<Vec<u8>>)>,
    mut w: Window,
) -> Tally {
    let mut t = Tally::new();
    loop {
        let started = w.next_start().await;
        if started >= w.end {
            break;
        }
        let mut inv = script.prepare_invoke();
        for k in &call.0 {
            inv.key(k);
        }
        for a in &call.1 {
            inv.arg(a);
        }
        let reply: redis::RedisResult<Vec<i64>> = inv.invoke_async(&mut conn).await;
        if t.record(started, &w) {
            // `batch.lua`: {now, status of the one op, …}.
            match reply.as_deref() {
                Ok([_, 1, ..]) => t.ok += 1,
                Ok([_, 0, ..]) => t.denied += 1,
                Ok(_) => t.other += 1,
                Err(_) => t.errors += 1,
            }
        }
    }
    t
}

struct Measured {
    tally: Tally,
    seconds: f64,
    /// (process, CPU cores used during the measured phase).
    cpu: Vec<(String, f64)>,
}

impl Measured {
    /// CPU time, in µs per call, of the processes whose name passes `which`.
    fn cpu_per_call(&self, which: impl Fn(&str) -> bool) -> f64 {
        let cores: f64 = self.cpu.iter().filter(|(n, _)| which(n)).map(|c| c.1).sum();
        cores * 1e6 / self.rate().max(1e-9)
    }

    fn foreign(&self) -> f64 {
        self.cpu
            .iter()
            .find(|(n, _)| n == "other processes")
            .map_or(0.0, |c| c.1)
    }

    fn rate(&self) -> f64 {
        self.tally.hist.len() as f64 / self.seconds
    }

    fn pct(&self, q: f64) -> f64 {
        self.tally.hist.value_at_quantile(q) as f64 / 1e6
    }
}

/// Runs `workers`, samples the CPU use of `procs` over the measured window (and runs
/// `perf` on the tollgates if asked), and merges the workers' tallies.
async fn measure(
    w: Window,
    procs: Vec<(String, String)>,
    perf: Option<(PathBuf, Vec<u32>)>,
    workers: Vec<tokio::task::JoinHandle<Tally>>,
) -> Measured {
    tokio::time::sleep_until(w.measure_from.into()).await;
    let perf = perf.map(|(out, pids)| {
        let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
        let secs = (w.end - Instant::now()).as_secs_f64();
        Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F", "999"])
            .args(["--call-graph", "dwarf,16384", "-p", &pids.join(",")])
            .arg("-o")
            .arg(&out)
            .args(["--", "sleep", &format!("{secs:.3}")])
            .stdout(Stdio::null())
            .spawn()
            .expect("perf must be installed for --perf")
    });
    let mut procs = procs;
    if let Some(p) = &perf {
        procs.push(("perf".into(), p.id().to_string()));
    }
    let t0 = Instant::now();
    let machine0 = machine_ticks();
    let before: Vec<u64> = procs.iter().map(|(_, pid)| cpu_ticks(pid)).collect();
    tokio::time::sleep_until(w.end.into()).await;
    let seconds = t0.elapsed().as_secs_f64();
    let machine1 = machine_ticks();
    let mut ours = 0.0;
    let mut cpu: Vec<(String, f64)> = procs
        .iter()
        .zip(before)
        .map(|((name, pid), b)| {
            let used = (cpu_ticks(pid) - b) as f64 / TICKS_PER_SEC;
            ours += used;
            (name.clone(), used / seconds)
        })
        .collect();
    let busy = (machine1.0 - machine0.0) as f64 / TICKS_PER_SEC;
    let idle = (machine1.1 - machine0.1) as f64 / TICKS_PER_SEC;
    cpu.push(("other processes".into(), (busy - ours).max(0.0) / seconds));
    cpu.push(("idle".into(), idle / seconds));
    let mut tally = Tally::new();
    for wk in workers {
        tally.merge(&wk.await.unwrap());
    }
    if let Some(mut p) = perf {
        let _ = p.wait();
    }
    Measured {
        tally,
        seconds: (w.end - w.measure_from).as_secs_f64(),
        cpu,
    }
}

fn report(label: &str, m: &Measured) {
    let t = &m.tally;
    let n = t.hist.len().max(1) as f64;
    println!(
        "  {label:<34} {:>9.0}/s  p50 {:>6.3} ms  p99 {:>6.3} ms  p99.9 {:>6.3} ms  max {:>7.3} ms",
        m.rate(),
        m.pct(0.5),
        m.pct(0.99),
        m.pct(0.999),
        t.hist.max() as f64 / 1e6
    );
    println!(
        "  {:<34} allowed {:.2}%  denied {:.2}%  other {}  errors {}  store fallbacks {}",
        "",
        100.0 * t.ok as f64 / n,
        100.0 * t.denied as f64 / n,
        t.other,
        t.errors,
        t.fallback
    );
    let cpu: Vec<String> = m
        .cpu
        .iter()
        .map(|(name, cores)| {
            if name == "other processes" || name == "idle" {
                return format!("{name} {:.0}%", cores * 100.0);
            }
            format!(
                "{name} {:.0}% ({:.1} µs/call)",
                cores * 100.0,
                cores * 1e6 / m.rate().max(1e-9)
            )
        })
        .collect();
    println!("  {:<34} CPU: {}", "", cpu.join(", "));
}

/// One measured phase; measured again (up to `--attempts` times) when other processes
/// took more than `--max-foreign` cores meanwhile, since the machine may be shared.
async fn phase(
    opts: &Opts,
    label: &str,
    procs: &[(String, String)],
    perf: Option<(PathBuf, Vec<u32>)>,
    spawn: impl Fn(Window) -> Vec<tokio::task::JoinHandle<Tally>>,
) -> Measured {
    let mut attempt = 1;
    loop {
        tokio::task::block_in_place(|| {
            wait_until_quiet(opts.quiet, Duration::from_secs(opts.quiet_patience))
        });
        let w = Window::new(opts);
        let m = measure(w, procs.to_vec(), perf.clone(), spawn(w)).await;
        let foreign = m.foreign();
        if foreign <= opts.max_foreign || attempt >= opts.attempts {
            report(label, &m);
            return m;
        }
        println!(
            "  {label}: other processes used {:.0}% CPU meanwhile; measuring again",
            foreign * 100.0
        );
        attempt += 1;
    }
}

struct Row {
    scenario: String,
    tollgate: Measured,
    direct_shared: Measured,
    direct_per_conn: Measured,
    /// Mean ops per coalesced script call during the tollgate phase, all processes.
    batch: f64,
    reference: Reference,
}

/// The same-write-count reference script (as many writes as a check), from
/// `redis-benchmark`.
const REFERENCE_SCRIPT: &str = "for i = 1, 6 do redis.call('INCRBY', KEYS[i], 1) end \
     redis.call('PEXPIRE', KEYS[1], 60000) return 1";

struct Reference {
    calls_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    redis_us_per_call: f64,
}

/// Runs the reference script from `redis-benchmark` at the same concurrency, for about
/// `--duration`, and reads Redis's CPU from `/proc` around it.
fn reference_phase(opts: &Opts, redis: &RedisServer) -> Reference {
    wait_until_quiet(opts.quiet, Duration::from_secs(opts.quiet_patience));
    let n = (60_000.0 * opts.duration.as_secs_f64()).max(10_000.0) as u64;
    let pid = redis.pid().expect("redis-server runs").to_string();
    let ticks = cpu_ticks(&pid);
    let started = Instant::now();
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &redis.port.to_string(),
            "-c",
            &opts.concurrency.to_string(),
        ])
        .args(["-n", &n.to_string(), "--csv", "EVAL", REFERENCE_SCRIPT, "6"])
        .args(["{r}1", "{r}2", "{r}3", "{r}4", "{r}5", "{r}6"])
        .output()
        .expect("redis-benchmark must be installed (it ships with redis-server)");
    let seconds = started.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(&pid) - ticks) as f64 / TICKS_PER_SEC;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    // "p99_latency_ms","max_latency_ms": the test name holds commas, so count from the end.
    let fields: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .rsplitn(8, ',')
        .take(7)
        .map(|v| v.trim().trim_matches('"').parse().unwrap_or(0.0))
        .collect();
    // rsplitn yields from the end: max, p99, p95, p50, min, avg, rps.
    let row: Vec<f64> = fields.into_iter().rev().collect();
    let r = Reference {
        calls_per_sec: row.first().copied().unwrap_or(0.0),
        p50_ms: row.get(3).copied().unwrap_or(0.0),
        p99_ms: row.get(5).copied().unwrap_or(0.0),
        redis_us_per_call: cpu * 1e6 / n as f64,
    };
    println!(
        "  reference (6 × INCRBY + PEXPIRE, redis-benchmark, {} conns): {:.0} calls/s, p50 {:.3} ms, \
         p99 {:.3} ms, redis {:.1} µs/call ({n} calls in {seconds:.1} s)",
        opts.concurrency, r.calls_per_sec, r.p50_ms, r.p99_ms, r.redis_us_per_call
    );
    r
}

/// Checks answered from leases and by the store, and requests held leased, at one
/// tollgate so far (`--lease-ms`).
async fn lease_counts(addr: SocketAddr) -> [f64; 3] {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
    };
    [
        value(r#"tollgate_lease_checks_total{answer="local"}"#),
        value(r#"tollgate_lease_checks_total{answer="store"}"#),
        value(r#"tollgate_lease_held{kind="requests"}"#),
    ]
}

/// (script calls, ops carried) of `tollgate_store_batch_size` at one tollgate so far.
async fn batch_counts(addr: SocketAddr) -> (f64, f64) {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
    };
    (
        value("tollgate_store_batch_size_count"),
        value("tollgate_store_batch_size_sum"),
    )
}

async fn run_scenario(opts: &Opts, scenario: char) -> Row {
    let title = match scenario {
        'a' => "(a) 1 matching config".to_string(),
        'b' => "(b) 3 matching configs".to_string(),
        'c' => format!("(c) {} configs, 3 matching", opts.filler_configs),
        'd' => "(d) 2 tollgates, 3 matching".to_string(),
        _ => format!(
            "(e) fleet: {} tollgates × {} conns, 3 matching",
            opts.fleet,
            opts.concurrency.div_ceil(opts.fleet)
        ),
    };
    println!("\n## {title}");
    let redis = RedisServer::start_with(&opts.redis_bin, &redis_args(&opts.redis_args));
    let url = redis.url();
    let bodies = matching_bodies(scenario);
    if scenario == 'c' {
        let n = opts.filler_configs - bodies.len();
        let t = Instant::now();
        seed_fillers(&url, n).await;
        println!(
            "  seeded {n} non-matching configs in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let instances = match scenario {
        'd' => 2,
        'e' => opts.fleet,
        _ => 1,
    };
    let mut tollgates = Vec::new();
    for _ in 0..instances {
        tollgates.push(start_tollgate(opts, &url).await);
    }
    let mut create_ms = Vec::new();
    for b in &bodies {
        create_ms.push(create_via_api(tollgates[0].addr, b).await.as_secs_f64() * 1e3);
    }
    let total = if scenario == 'c' {
        opts.filler_configs
    } else {
        bodies.len()
    } as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    for tg in &tollgates {
        while ready_configs(tg.addr).await != total {
            assert!(Instant::now() < deadline, "configs did not reach tollgate");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "  {total} configs loaded; management API create took {} ms each",
        create_ms
            .iter()
            .map(|ms| format!("{ms:.1}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    // One real check: allowed, with 3 limits per matching config.
    let probe: Value = reqwest::Client::new()
        .post(format!("http://{}/v1/check", tollgates[0].addr))
        .header("content-type", "application/json")
        .body(CHECK_BODY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limits = probe["limits"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(probe["allowed"], json!(true), "probe check: {probe}");
    assert_eq!(limits, 3 * bodies.len(), "probe check: {probe}");

    let me = std::process::id().to_string();
    let mut procs = vec![(
        "redis".to_string(),
        redis.pid().expect("redis-server runs").to_string(),
    )];
    for (i, tg) in tollgates.iter().enumerate() {
        let name = if instances > 1 {
            format!("tollgate{}", i + 1)
        } else {
            "tollgate".into()
        };
        procs.push((name, tg.proc.pid().to_string()));
    }
    procs.push(("load generator".into(), me.clone()));

    // The script call a check makes, as tollgate builds it.
    let (keys, args, n_limits) = script_call(&url).await;
    assert_eq!(
        n_limits, limits,
        "direct call must evaluate the same limits"
    );
    let call = Arc::new((keys, args));
    let script = Arc::new(redis::Script::new(scripts::BATCH));
    let client = redis::Client::open(url.as_str()).unwrap();
    let shared = client.get_connection_manager().await.unwrap();

    // Steady state first: a sliding window's hash grows by one sub-bucket every
    // window/30 until it holds a whole window, and the script's cost grows with it.
    // Filling the windows before measuring keeps every phase on the same footing.
    if !opts.prefill.is_zero() {
        println!(
            "  prefilling the windows for {:.0} s with direct script calls:",
            opts.prefill.as_secs_f64()
        );
        let deadline = Instant::now() + opts.prefill;
        let mut line = Vec::new();
        while Instant::now() < deadline {
            let now = Instant::now();
            let w = Window {
                measure_from: now,
                end: (now + Duration::from_secs(10)).min(deadline),
                interval: None,
                first: now,
            };
            let workers = (0..opts.concurrency)
                .map(|_| {
                    tokio::spawn(script_worker(
                        Conn::Shared(shared.clone()),
                        script.clone(),
                        call.clone(),
                        w,
                    ))
                })
                .collect();
            let m = measure(w, vec![procs[0].clone()], None, workers).await;
            line.push(format!(
                "{:.0}/s ({:.0} µs redis CPU/call)",
                m.rate(),
                m.cpu[0].1 * 1e6 / m.rate().max(1e-9)
            ));
        }
        println!("    {}", line.join(" → "));
    }
    let mut sync = client.get_connection().unwrap();
    let hashes: Vec<String> = call
        .0
        .iter()
        .map(|k| {
            let len: u64 = redis::cmd("HLEN").arg(k).query(&mut sync).unwrap_or(0);
            let enc: String = redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(k)
                .query(&mut sync)
                .unwrap_or_default();
            format!("{len} fields ({enc})")
        })
        .collect();
    println!("  counter hashes: {}", hashes.join(", "));

    // 1. tollgate over HTTP.
    let perf = opts.perf_dir.as_ref().map(|dir| {
        std::fs::create_dir_all(dir).unwrap();
        (
            dir.join(format!("scenario-{scenario}.perf.data")),
            tollgates.iter().map(|t| t.proc.pid()).collect::<Vec<u32>>(),
        )
    });
    let addrs: Vec<SocketAddr> = tollgates.iter().map(|t| t.addr).collect();
    let mut batches_before = (0.0, 0.0);
    for a in &addrs {
        let (c, o) = batch_counts(*a).await;
        batches_before = (batches_before.0 + c, batches_before.1 + o);
    }
    let tollgate = phase(
        opts,
        &format!("tollgate, {} HTTP conns", opts.concurrency),
        &procs,
        perf,
        |w| {
            (0..opts.concurrency)
                .map(|i| {
                    tokio::spawn(http_worker(
                        addrs[i % addrs.len()],
                        limits,
                        w.for_worker(i, opts.concurrency),
                    ))
                })
                .collect()
        },
    )
    .await;

    let mut batches_after = (0.0, 0.0);
    for a in &addrs {
        let (c, o) = batch_counts(*a).await;
        batches_after = (batches_after.0 + c, batches_after.1 + o);
    }
    // Over warm-up and measured phase (the counters are cumulative).
    let batch =
        (batches_after.1 - batches_before.1) / (batches_after.0 - batches_before.0).max(1.0);
    println!("  mean batch: {batch:.2} ops per script call");
    if opts.lease_ms.is_some() {
        let mut sum = [0.0; 3];
        for a in &addrs {
            for (s, v) in sum.iter_mut().zip(lease_counts(*a).await) {
                *s += v;
            }
        }
        println!(
            "  leases: {:.1} % of checks answered locally ({:.0} local, {:.0} by Redis); {:.0} requests held leased now, fleet-wide",
            100.0 * sum[0] / (sum[0] + sum[1]).max(1.0),
            sum[0],
            sum[1],
            sum[2]
        );
    }

    if tollgate.tally.fallback > 0 {
        for tg in &tollgates {
            let log = std::fs::read_to_string(&tg.proc.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            println!(
                "  WARNING: tollgate answered by --on-store-error; its log ends with:\n    {}",
                tail.join("\n    ")
            );
        }
    }

    // 2. The same script call straight to Redis.
    let direct_procs = vec![procs[0].clone(), ("load generator".into(), me)];
    // One script worker per connection slot; `conn(i)` gives worker i its connection.
    let script_workers = |w: Window, script: &Arc<redis::Script>, conn: &dyn Fn() -> Conn| {
        (0..opts.concurrency)
            .map(|i| {
                tokio::spawn(script_worker(
                    conn(),
                    script.clone(),
                    call.clone(),
                    w.for_worker(i, opts.concurrency),
                ))
            })
            .collect()
    };
    let shared_conn = || Conn::Shared(shared.clone());
    let own_conn = || Conn::Own(Box::new(client.clone()));
    let direct_shared = phase(
        opts,
        "direct, 1 multiplexed conn",
        &direct_procs,
        None,
        |w| script_workers(w, &script, &shared_conn),
    )
    .await;
    let direct_per_conn = phase(
        opts,
        &format!("direct, {} conns", opts.concurrency),
        &direct_procs,
        None,
        |w| script_workers(w, &script, &own_conn),
    )
    .await;
    if let Some(path) = &opts.alt_script {
        let source = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let alt = Arc::new(redis::Script::new(&source));
        for (label, s) in [
            ("direct, built-in script, 1 mux", &script),
            ("direct, alt script, 1 mux", &alt),
            ("direct, built-in script, 1 mux", &script),
            ("direct, alt script, 1 mux", &alt),
        ] {
            phase(opts, label, &direct_procs, None, |w| {
                script_workers(w, s, &shared_conn)
            })
            .await;
        }
    }
    drop(tollgates);
    let reference = tokio::task::block_in_place(|| reference_phase(opts, &redis));
    drop(redis);
    Row {
        scenario: title,
        tollgate,
        direct_shared,
        direct_per_conn,
        batch,
        reference,
    }
}

fn main() {
    let opts = parse_opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "tollgate load test: concurrency {}, warmup {:?}, measured {:?}, client threads {}, \
         tollgate worker threads {}, {} CPUs",
        opts.concurrency,
        opts.warmup,
        opts.duration,
        opts.client_threads,
        opts.tollgate_threads
            .map_or("default".to_string(), |t| t.to_string()),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("tollgate binary: {}", opts.tollgate_bin.display());
    let rows: Vec<Row> = rt.block_on(async {
        let mut rows = Vec::new();
        for &s in &opts.scenarios {
            rows.push(run_scenario(&opts, s).await);
        }
        rows
    });

    println!(
        "\n| scenario | concurrency | tollgate checks/s | p50 ms | p99 ms | p99.9 ms | 200 / 429 / fallback | \
         direct script calls/s (1 mux conn / {c} conns) | direct p50 / p99 ms | ratio |",
        c = opts.concurrency
    );
    println!("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|");
    for r in &rows {
        let t = &r.tollgate;
        let best = if r.direct_shared.rate() >= r.direct_per_conn.rate() {
            &r.direct_shared
        } else {
            &r.direct_per_conn
        };
        let n = t.tally.hist.len().max(1) as f64;
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.1}% / {:.1}% / {:.1}% | {:.0} / {:.0} | {:.3} / {:.3} | {:.0}% |",
            r.scenario,
            opts.concurrency,
            t.rate(),
            t.pct(0.5),
            t.pct(0.99),
            t.pct(0.999),
            100.0 * t.tally.ok as f64 / n,
            100.0 * t.tally.denied as f64 / n,
            100.0 * t.tally.fallback as f64 / n,
            r.direct_shared.rate(),
            r.direct_per_conn.rate(),
            best.pct(0.5),
            best.pct(0.99),
            100.0 * t.rate() / best.rate().max(1e-9),
        );
    }

    println!(
        "\nCPU time per check (µs), measured phase:\n\n| scenario | tollgate (all processes) | \
         redis, via tollgate | redis, direct (1 mux conn / {c} conns) | load generator, via tollgate |",
        c = opts.concurrency
    );
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} / {:.1} | {:.1} |",
            r.scenario,
            r.tollgate.cpu_per_call(|n| n.starts_with("tollgate")),
            r.tollgate.cpu_per_call(|n| n == "redis"),
            r.direct_shared.cpu_per_call(|n| n == "redis"),
            r.direct_per_conn.cpu_per_call(|n| n == "redis"),
            r.tollgate.cpu_per_call(|n| n == "load generator"),
        );
    }

    println!(
        "\nRedis CPU per check, against the same-write-count reference \
         (6 × INCRBY + PEXPIRE from redis-benchmark, {c} conns):\n\n| scenario | checks/s | p50 ms | \
         p99 ms | redis µs/check | mean batch | reference calls/s | reference p50 / p99 ms | \
         reference redis µs/call | checks/s ÷ reference |",
        c = opts.concurrency
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let f = &r.reference;
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.1} | {:.1} | {:.0} | {:.3} / {:.3} | {:.1} | {:.2} |",
            r.scenario,
            r.tollgate.rate(),
            r.tollgate.pct(0.5),
            r.tollgate.pct(0.99),
            r.tollgate.cpu_per_call(|n| n == "redis"),
            r.batch,
            f.calls_per_sec,
            f.p50_ms,
            f.p99_ms,
            f.redis_us_per_call,
            r.tollgate.rate() / f.calls_per_sec.max(1e-9),
        );
    }
}
