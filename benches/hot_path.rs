//! Micro-benchmarks of the CPU work on tollgate's check path, without any I/O:
//!
//! - `matching/{10,1000,100000}`: finding the configs that apply to a request in a
//!   snapshot of that many configs (3 of them match), as `api::check::check` does;
//! - `duration/*`: the reset-duration grammar;
//! - `script_args/*`: building a check op for 3 matching configs, and the coalesced
//!   `batch.lua` call of 1 or 32 such checks packed into the RESP bytes that go on the
//!   wire (one command buffer, each config once);
//! - `json/*`: parsing a check body and writing a check answer;
//! - `leases/answer_3_configs_9_limits`: a check answered from this replica's leases
//!   (`--lease-ms`), all at once under the lock: the whole of a local answer's decision.
//!
//! Run: `cargo bench --bench hot_path`. Never run by CI; nothing here asserts on time.

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;
use std::sync::Arc;
use tollgate::api::check::{CheckRequest, write_answer};
use tollgate::api::extract::parse_json;
use tollgate::limits::{CompiledConfig, MatchKey, Snapshot};
use tollgate::model::ModelConfig;
use tollgate::model::duration::parse_duration_ms;
use tollgate::model::validate::create_config;
use tollgate::store::LimitOutcome;
use tollgate::store::redis::ops::{ConfigRef, Op, OpKind, fill_batch};
use tollgate::store::redis::packed_limits::packed_limits;
use tollgate::store::redis::{Keys, scripts};

const CHECK_BODY: &[u8] =
    br#"{"model":"gpt-4o","virtual_key":"vk-1","user":"u-1","tokens":10,"cost":0.001}"#;

fn limits() -> Value {
    json!({
        "rate_limit": {
            "request_max_limit": 1_000_000, "request_reset_duration": "1m",
            "token_max_limit": 1_000_000_000u64, "token_reset_duration": "1m"
        },
        "budgets": [{"max_limit": 1_000_000.0, "reset_duration": "1d"}]
    })
}

fn config(mut body: Value) -> ModelConfig {
    let extra = limits();
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    create_config(serde_json::from_value(body).unwrap(), Utc::now()).unwrap()
}

/// `n` configs: the 3 that match `gpt-4o` / `vk-1` / `u-1` (global `*`, the virtual
/// key's, the user's), and `n - 3` that do not: other virtual keys, other users, and
/// global configs of other models, each with request, token and budget limits.
fn configs(n: usize) -> Vec<ModelConfig> {
    let mut out = vec![
        config(json!({"model_name": "*", "scope": "global"})),
        config(json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "vk-1"})),
        config(json!({"model_name": "*", "scope": "user", "scope_id": "u-1"})),
    ];
    for i in 3..n {
        out.push(config(match i % 3 {
            0 => json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": format!("vk-x{i}")}),
            1 => json!({"model_name": "*", "scope": "user", "scope_id": format!("u-x{i}")}),
            _ => json!({"model_name": format!("model-{i}"), "provider": "openai"}),
        }));
    }
    out
}

fn key() -> MatchKey<'static> {
    MatchKey {
        model: "gpt-4o",
        provider: None,
        virtual_key: Some("vk-1"),
        user: Some("u-1"),
    }
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("matching");
    for n in [10usize, 1_000, 100_000] {
        let snapshot = Snapshot::build(1, configs(n));
        assert_eq!(snapshot.len(), n);
        assert_eq!(snapshot.matching(&key()).len(), 3);
        group.bench_with_input(BenchmarkId::from_parameter(n), &snapshot, |b, s| {
            // What the check handler does: match, then borrow the compiled configs.
            b.iter(|| {
                let matched: Vec<&CompiledConfig> = s
                    .matching(black_box(&key()))
                    .into_iter()
                    .map(|c| &**c)
                    .collect();
                black_box(matched.len())
            })
        });
    }
    group.finish();
}

fn duration(c: &mut Criterion) {
    let mut group = c.benchmark_group("duration");
    for d in ["1m", "1h30m", "1.5d", "monthly"] {
        group.bench_with_input(BenchmarkId::from_parameter(d), d, |b, d| {
            b.iter(|| parse_duration_ms(black_box(d)).unwrap())
        });
    }
    group.finish();
}

/// One check op of 3 configs, as `RedisStore::check` builds it.
fn check_op(keys: &Keys, matched: &[&CompiledConfig]) -> Op {
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

/// The coalesced call's command, written straight into one `Cmd` and packed.
fn batch_cmd(sha: &str, prefix: &str, ops: &[Op]) -> Vec<u8> {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha);
    fill_batch(&mut cmd, prefix, ops.iter());
    cmd.get_packed_command()
}

fn script_args(c: &mut Criterion) {
    let snapshot = Snapshot::build(1, configs(3));
    let matched: Vec<&CompiledConfig> = snapshot
        .matching(&key())
        .into_iter()
        .map(|c| &**c)
        .collect();
    assert_eq!(matched.len(), 3);
    let script = redis::Script::new(scripts::BATCH);
    let keys = Keys::new("tollgate:", false);
    let prefix = keys.usage_markers();
    let mut group = c.benchmark_group("script_args");
    let sha = script.get_hash();
    group.bench_function("op_build_3_configs", |b| {
        b.iter(|| check_op(&keys, black_box(&matched)))
    });
    for n in [1usize, 32] {
        let ops: Vec<Op> = (0..n).map(|_| check_op(&keys, &matched)).collect();
        group.bench_function(format!("batch_cmd_and_pack_{n}_checks_3_configs"), |b| {
            b.iter(|| batch_cmd(sha, &prefix, black_box(&ops)))
        });
    }
    group.finish();
}

fn json_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("json");
    group.bench_function("parse_check_request", |b| {
        b.iter(|| parse_json::<CheckRequest>(black_box(CHECK_BODY)).unwrap())
    });
    // An allowed answer for 3 configs × (requests, tokens, budget) = 9 limits.
    let snapshot = Snapshot::build(1, configs(3));
    let matched: Vec<&CompiledConfig> = snapshot
        .matching(&key())
        .into_iter()
        .map(|c| &**c)
        .collect();
    // The limits' fixed fields are serialized once per compiled config; only counts vary.
    let outcome = LimitOutcome {
        admitted: true,
        used: 12_345,
        reset_after_ms: 59_000,
        retry_after_ms: 0,
    };
    let outcomes = vec![outcome; 9];
    group.bench_function("write_check_response_9_limits", |b| {
        b.iter(|| {
            // The (limit, outcome) pairs the handler also collects (for the headers).
            let pairs: Vec<_> = matched
                .iter()
                .flat_map(|c| c.limits().iter())
                .zip(outcomes.iter().copied())
                .collect();
            black_box(&pairs);
            black_box(write_answer(
                true,
                None,
                None,
                Some(1_795_000_000_000),
                &matched,
                &outcomes,
                &[],
            ))
        })
    });
    group.finish();
}

fn leases(c: &mut Criterion) {
    use tollgate::app::leases::Leases;
    use tollgate::store::{Amounts, CheckOutcome, Granted, LimitGrant};
    let matched: Vec<Arc<CompiledConfig>> = configs(3)
        .into_iter()
        .map(|c| Arc::new(CompiledConfig::compile(c).unwrap()))
        .collect();
    let amounts = Amounts {
        requests: 1,
        tokens: 10,
        cost_nanos: 1_000_000,
    };
    let leases = Leases::new(10_000, 1);
    leases.answer(&matched, amounts);
    let n = 9;
    let outcome = CheckOutcome {
        allowed: true,
        limits: vec![
            LimitOutcome {
                admitted: true,
                used: 0,
                reset_after_ms: 60_000,
                retry_after_ms: 0,
            };
            n
        ],
        now_ms: 1,
        crossings: Vec::new(),
    };
    // Room for far more checks than the bench makes.
    let granted = Granted {
        per_limit: vec![
            LimitGrant {
                added: 1 << 50,
                until_ms: 10_001,
                life_ms: 10_000,
            };
            n
        ],
    };
    leases.take(
        &matched,
        amounts,
        std::time::Instant::now(),
        &outcome,
        &granted,
    );
    let mut group = c.benchmark_group("leases");
    group.bench_function("answer_3_configs_9_limits", |b| {
        b.iter(|| black_box(leases.answer(black_box(&matched), amounts)).expect("leased"))
    });
    group.finish();
}

criterion_group!(benches, matching, duration, script_args, json_codec, leases);
criterion_main!(benches);
