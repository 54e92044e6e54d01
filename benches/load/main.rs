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

mod configs;
mod measure;
mod opts;
mod processes;
mod scenario;
mod workers;

use configs::*;
use measure::*;
use opts::*;
use processes::*;
use scenario::*;
use workers::*;

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
