//! The scrape-time cost of `--usage-metrics`: ranking every config this replica has seen
//! and writing the gauges of the top N, as `GET /metrics` does.
//!
//! - `usage_gauges/100000_seen_top_1000`: 100,000 configs, each with a request window, a
//!   token window and a budget, all seen at spread usage ratios; the gauges of the 1,000
//!   fullest (3,000 limits, 6,000 series). The size of that text is printed once.
//! - `usage_gauges/100000_seen_rank_only`: the ranking alone, without writing the text.
//! - `usage_gauges/100000_unseen`: the same snapshot, nothing seen: the scan alone.
//!
//! Run: `cargo bench --bench usage_metrics`. Never run by CI; nothing here asserts on time.

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
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
        for (i, spec) in c.limits.iter().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.seen
                .record(i, (x % 1000) as i64 * spec.max / 1000, now_ms);
        }
    }
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
    eprintln!(
        "usage_gauges: {CONFIGS} configs seen, top {N}: {} bytes, {series} series ({} bytes a series)",
        out.len(),
        out.len() / series
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
