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
