//! Micro-benchmarks of the CPU work on tollgate's check path, without any I/O:
//!
//! - `matching/{10,1000,100000}`: finding the configs that apply to a request in a
//!   snapshot of that many configs (3 of them match), as `api::check::check` does;
//! - `duration/*`: the reset-duration grammar;
//! - `script_args/*`: building the `check.lua` call for 3 matching configs and packing
//!   it into the RESP bytes that go on the wire: the old way (a buffer per argument) and
//!   the way `RedisStore::check` does it now (one command buffer);
//! - `json/*`: parsing a check body and writing a check answer.
//!
//! Run: `cargo bench --bench hot_path`. Never run by CI; nothing here asserts on time.

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use redis::ToRedisArgs;
use serde_json::{Value, json};
use std::hint::black_box;
use tollgate::api::check::{CheckRequest, write_answer};
use tollgate::api::extract::parse_json;
use tollgate::limits::{CompiledConfig, MatchKey, Snapshot};
use tollgate::model::ModelConfig;
use tollgate::model::duration::parse_duration_ms;
use tollgate::model::validate::create_config;
use tollgate::store::LimitOutcome;
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

/// How `RedisStore::check` built the call before `37931ce`: `Call::key`/`Call::arg`
/// collected every key and argument as its own `Vec<u8>` (`ToRedisArgs::to_redis_args`),
/// then `Call::cmd` copied them into an EVALSHA `Cmd`, which the connection packs. Kept
/// as the baseline the current way is compared with.
fn current_call(sha: &str, keys: &Keys, matched: &[&CompiledConfig]) -> Vec<u8> {
    let mut keys_v: Vec<Vec<u8>> = Vec::new();
    let mut args_v: Vec<Vec<u8>> = Vec::new();
    args_v.extend("0".to_redis_args());
    args_v.extend(1i64.to_redis_args());
    args_v.extend(10i64.to_redis_args());
    args_v.extend(1_000_000i64.to_redis_args());
    args_v.extend(0i64.to_redis_args());
    for c in matched {
        keys_v.extend(keys.counters(&c.config.id).to_redis_args());
    }
    for c in matched {
        args_v.extend(c.lua_limits.as_slice().to_redis_args());
    }
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(keys_v.len());
    for k in &keys_v {
        cmd.arg(k.as_slice());
    }
    for a in &args_v {
        cmd.arg(a.as_slice());
    }
    cmd.get_packed_command()
}

/// The same command written straight into one `Cmd` (no per-argument `Vec<u8>`), as
/// `RedisStore::check` does since `37931ce`.
fn direct_cmd(sha: &str, keys: &Keys, matched: &[&CompiledConfig]) -> Vec<u8> {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(matched.len());
    for c in matched {
        cmd.arg(keys.counters(&c.config.id));
    }
    cmd.arg("0")
        .arg(1i64)
        .arg(10i64)
        .arg(1_000_000i64)
        .arg(0i64);
    for c in matched {
        cmd.arg(c.lua_limits.as_slice());
    }
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
    let script = redis::Script::new(scripts::CHECK);
    let keys = Keys::new("tollgate:");
    let mut group = c.benchmark_group("script_args");
    let sha = script.get_hash();
    // Both ways must put the same bytes on the wire.
    assert_eq!(
        current_call(sha, &keys, &matched),
        direct_cmd(sha, &keys, &matched)
    );
    group.bench_function("current_call_and_pack_3_configs", |b| {
        b.iter(|| current_call(sha, &keys, black_box(&matched)))
    });
    group.bench_function("direct_cmd_and_pack_3_configs", |b| {
        b.iter(|| direct_cmd(sha, &keys, black_box(&matched)))
    });
    // `redis::Script::prepare_invoke` (what the direct-script ceiling in `load` uses),
    // without the packing, which is private to the redis crate there.
    group.bench_function("script_prepare_invoke_3_configs", |b| {
        b.iter(|| {
            let mut inv = script.prepare_invoke();
            for c in black_box(&matched) {
                inv.key(keys.counters(&c.config.id));
            }
            inv.arg("0")
                .arg(1i64)
                .arg(10i64)
                .arg(1_000_000i64)
                .arg(0i64);
            for c in &matched {
                inv.arg(c.lua_limits.as_slice());
            }
            black_box(inv);
        })
    });
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
    // The limits' fixed fields come pre-serialized from the snapshot; only counts vary.
    let outcome = LimitOutcome {
        admitted: true,
        used: 12_345,
        reset_after_ms: 59_000,
        retry_after_ms: 0,
    };
    group.bench_function("write_check_response_9_limits", |b| {
        b.iter(|| {
            let limits: Vec<_> = matched
                .iter()
                .flat_map(|c| c.limits.iter())
                .map(|s| (s, outcome))
                .collect();
            black_box(write_answer(
                true,
                None,
                None,
                Some(1_795_000_000_000),
                &limits,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, matching, duration, script_args, json_codec);
criterion_main!(benches);
