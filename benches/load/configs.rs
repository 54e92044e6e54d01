//! The configs a scenario creates, and the script call a check makes.

use super::*;

pub(crate) fn limits() -> Value {
    json!({
        "rate_limit": {
            "request_max_limit": 1_000_000_000u64, "request_reset_duration": "1m",
            "token_max_limit": 1_000_000_000_000u64, "token_reset_duration": "1m"
        },
        "budgets": [{"max_limit": 1_000_000.0, "reset_duration": "1d"}]
    })
}

pub(crate) fn with_limits(mut body: Value) -> Value {
    for (k, v) in limits().as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The configs that match `CHECK_BODY`.
pub(crate) fn matching_bodies(scenario: char) -> Vec<Value> {
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
pub(crate) fn filler_body(i: usize) -> Value {
    with_limits(match i % 3 {
        0 => {
            json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": format!("vk-x{i}")})
        }
        1 => json!({"model_name": "*", "scope": "user", "scope_id": format!("u-x{i}")}),
        _ => json!({"model_name": format!("model-{i}"), "provider": "openai"}),
    })
}

pub(crate) fn redis_store(url: &str) -> RedisStore {
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
pub(crate) async fn seed_fillers(url: &str, n: usize) {
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

pub(crate) async fn create_via_api(addr: SocketAddr, body: &Value) -> Duration {
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

pub(crate) async fn ready_configs(addr: SocketAddr) -> u64 {
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
pub(crate) async fn script_call(url: &str) -> (Vec<String>, Vec<Vec<u8>>, usize) {
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
                n_limits: c.limits().len(),
            })
            .collect(),
        marker: None,
        lease: None,
    };
    let (key_names, args) = batch_parts(&keys.usage_markers(), &[op]);
    let limits = matched.iter().map(|c| c.limits().len()).sum();
    (key_names, args, limits)
}
