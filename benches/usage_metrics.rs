//! The scrape-time cost of `--usage-metrics`: ranking every config this replica has seen
//! and writing the gauges of the top N, as `GET /metrics` does.
//!
//! - `usage_gauges/100000_seen_top_1000`: 100,000 configs, each with a request window, a
//!   token window and a budget, all seen at spread usage ratios; the gauges of the 1,000
//!   fullest (3,000 limits, 6,000 series). The size of that text, and the CPU time of a
//!   scrape (this thread's, so that waiting for a shared CPU does not count), are printed
//!   once.
//! - `usage_gauges/100000_seen_rank_only`: the ranking alone, without writing the text.
//! - `usage_gauges/100000_unseen`: the same snapshot, nothing seen: the scan alone.
//!
//! Run: `cargo bench --bench usage_metrics`. Never run by CI; nothing here asserts on time.

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use std::time::Duration;
use tollgate::limits::Snapshot;
use tollgate::model::validate::create_config;
use tollgate::observe::usage_gauges::{append, top};

const CONFIGS: usize = 100_000;
const N: usize = 1000;

fn snapshot() -> Snapshot {
    let configs = (0..CONFIGS)
        .map(|i| {
            let body = json!({
                "model_name": if i % 2 == 0 { "gpt-4o".to_string() } else { format!("model-{}", i % 50) },
                "scope": "virtual_key", "scope_id": format!("vk-{i:06}"),
                "rate_limit": {
                    "request_max_limit": 1000, "request_reset_duration": "1m",
                    "token_max_limit": 1_000_000, "token_reset_duration": "1h"
                },
                "budgets": [{"max_limit": 100.0, "reset_duration": "30d"}]
            });
            create_config(serde_json::from_value(body).unwrap(), Utc::now()).unwrap()
        })
        .collect();
    Snapshot::build(1, configs)
}

/// Marks every limit seen at `now_ms`, at ratios spread over 0..100 % (a fixed
/// pseudo-random walk, so every run ranks the same).
fn see_all(s: &Snapshot, now_ms: i64) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for c in s.newest_first() {
        for (i, spec) in c.limits().iter().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.seen()
                .record(i, (x % 1000) as i64 * spec.max / 1000, now_ms);
        }
    }
}

/// CPU time of this thread so far (utime + stime of `/proc/thread-self/stat`, 10 ms
/// ticks), so that a shared machine's waits do not count; None off Linux.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Mean CPU time of `f` over enough runs to span a few seconds of ticks.
fn cpu_per_run(runs: u32, mut f: impl FnMut()) -> Option<Duration> {
    let start = thread_cpu()?;
    for _ in 0..runs {
        f();
    }
    Some((thread_cpu()? - start) / runs)
}

fn bench(c: &mut Criterion) {
    let now = Utc::now().timestamp_millis();
    let unseen = snapshot();
    let mut group = c.benchmark_group("usage_gauges");
    group.sample_size(20);
    group.bench_function("100000_unseen", |b| {
        b.iter(|| {
            let mut out = String::new();
            append(&mut out, black_box(&unseen), N, now);
            out
        })
    });
    let seen = snapshot();
    see_all(&seen, now);
    let mut out = String::new();
    append(&mut out, &seen, N, now + 1);
    let series = out.lines().filter(|l| !l.starts_with('#')).count();
    let cpu = |snapshot: &Snapshot| {
        cpu_per_run(100, || {
            let mut out = String::new();
            append(&mut out, black_box(snapshot), N, now + 1);
            black_box(out);
        })
    };
    eprintln!(
        "usage_gauges: {CONFIGS} configs seen, top {N}: {} bytes, {series} series ({} bytes a series); \
         CPU per scrape {:?} (none seen: {:?})",
        out.len(),
        out.len() / series,
        cpu(&seen),
        cpu(&unseen),
    );
    group.bench_function("100000_seen_rank_only", |b| {
        b.iter(|| top(black_box(&seen), N, now + 1).len())
    });
    group.bench_function("100000_seen_top_1000", |b| {
        b.iter(|| {
            let mut out = String::new();
            append(&mut out, black_box(&seen), N, now + 1);
            out
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
