//! Every composed script (`store::redis::scripts::ALL`) compiles in a real Redis: `SCRIPT
//! LOAD` parses it, and answers the hash tollgate calls it by. (How the scripts are
//! composed is checked by the unit tests of `scripts.rs`.)

mod common;

use common::RedisServer;
use tollgate::store::redis::scripts::{ALL, COUNTER_LIB};

#[test]
fn every_script_loads_into_redis() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    for script in ALL.iter().chain([&COUNTER_LIB]) {
        let loaded: redis::RedisResult<String> = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script.source)
            .query(&mut conn);
        match loaded {
            Ok(sha) => assert_eq!(
                sha,
                redis::Script::new(script.source).get_hash(),
                "{}",
                script.name
            ),
            Err(e) => panic!("{} does not compile: {e}", script.name),
        }
    }
}

/// The one script only a Redis Cluster runs (the behaviour suites run the others): it
/// finds every function it calls (a missing one is only an error when called).
#[test]
fn counters_update_runs() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    redis::cmd("HSET")
        .arg("c:x")
        .arg("r")
        .arg("x")
        .query::<()>(&mut conn)
        .unwrap();
    // One seed of a daily budget from a calendar-month one (nothing used yet: its period
    // is computed, nothing is added), and one field to drop.
    let done: i64 = redis::Script::new(tollgate::store::redis::scripts::COUNTERS_UPDATE)
        .key("c:x")
        .arg(60_000)
        .arg(1)
        .arg("b:new")
        .arg(86_400_000)
        .arg(0)
        .arg(0)
        .arg("b:old")
        .arg(2_592_000_000i64)
        .arg(1)
        .arg(1)
        .arg("r")
        .invoke(&mut conn)
        .unwrap();
    assert_eq!(done, 1);
    let left: bool = redis::cmd("HEXISTS")
        .arg("c:x")
        .arg("r")
        .query(&mut conn)
        .unwrap();
    assert!(!left, "the dropped field is gone");
}

/// Redis Cluster's other script of its own: a config's counters kept under another key
/// (another layout's) are added into its counters here, window and budget alike.
#[test]
fn counters_migrate_adds_the_other_layouts_usage() {
    use tollgate::store::redis::ops::{ConfigRef, Op, OpKind, batch_parts};
    use tollgate::store::redis::packed_limits::packed_limits;
    use tollgate::store::redis::scripts::{BATCH, COUNTERS_MIGRATE, READ_USAGE};
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let req = serde_json::from_value(serde_json::json!({"model_name": "m",
        "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1h",
                       "token_max_limit": 1000, "token_reset_duration": "1m"},
        "budgets": [{"max_limit": 10.0, "reset_duration": "1d"}]}))
    .unwrap();
    let cfg = tollgate::model::validate::create_config(req, chrono::Utc::now()).unwrap();
    let compiled = tollgate::limits::CompiledConfig::compile(cfg).unwrap();
    let packed = packed_limits(&compiled).clone();
    let mut check = |key: &str, n: usize, tokens: i64| {
        let op = Op {
            kind: OpKind::Check,
            deadline: 0,
            amounts: [1, tokens, 1_000_000],
            reserved_at: 0,
            configs: vec![ConfigRef {
                key: key.into(),
                limits: packed.clone(),
                n_limits: compiled.limits().len(),
            }],
            marker: None,
            lease: None,
        };
        let (keys, args) = batch_parts("u:", &vec![op; n]);
        let script = redis::Script::new(BATCH);
        let mut inv = script.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        for a in &args {
            inv.arg(a);
        }
        let reply: Vec<i64> = inv.invoke(&mut conn).unwrap();
        assert!(reply[1..].contains(&1), "admitted: {reply:?}");
    };
    check("old", 3, 10);
    check("new", 2, 7);
    let other: Vec<Vec<u8>> = redis::cmd("HGETALL").arg("old").query(&mut conn).unwrap();
    let migrate = redis::Script::new(COUNTERS_MIGRATE);
    let mut inv = migrate.prepare_invoke();
    inv.key("new").arg(&*packed);
    for f in &other {
        inv.arg(f);
    }
    let folded: i64 = inv.invoke(&mut conn).unwrap();
    assert_eq!(folded, 3, "requests, tokens and the budget had usage");
    let usage: Vec<i64> = redis::Script::new(READ_USAGE)
        .key("new")
        .arg(&*packed)
        .invoke(&mut conn)
        .unwrap();
    for (limit, u) in compiled.limits().iter().zip(usage[1..].chunks(2)) {
        let want = match limit.kind {
            tollgate::limits::LimitKind::Requests => 5,
            tollgate::limits::LimitKind::Tokens => 44,
            tollgate::limits::LimitKind::Budget => 5_000_000,
        };
        assert_eq!(u[0], want, "{:?} added up", limit.kind);
    }
    let ttl: i64 = redis::cmd("PTTL").arg("new").query(&mut conn).unwrap();
    assert!(
        ttl > 3_600_000,
        "the hash outlives its longest limit: {ttl}"
    );
}
