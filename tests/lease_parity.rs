//! The store grants leases (`lua/lib/leases.lua`) by the rule of `src/limits/lease.rs`:
//! the two must agree for every count, hold, amount and fleet size, as
//! `tests/lua_parity.rs` keeps the counters equal.

mod common;

use common::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::RefCell;
use tollgate::store::redis::scripts::LIB;

/// KEYS none   ARGV: used, max, held, amount, replicas → what may be leased
const LEASE_HARNESS: &str = r#"
return lease_room(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]))
"#;

/// The store grants a lease by the rule of `limits::lease`: the same room for every count,
/// hold, amount and fleet size (near and past the limit too).
#[test]
fn lease_room_matches_rust() {
    let redis = RedisServer::start();
    let conn = RefCell::new(redis.conn());
    let script = redis::Script::new(&format!("{LIB}\n{LEASE_HARNESS}"));
    let mut runner = TestRunner::new(Config {
        cases: 400,
        ..Config::default()
    });
    let values = (
        0i64..2_000_000,
        1i64..2_000_000,
        0i64..10_000,
        0i64..5_000,
        1i64..64,
    );
    runner
        .run(&values, |(used, max, held, amount, n)| {
            let held = held.min(used);
            let got: i64 = script
                .arg(used)
                .arg(max)
                .arg(held)
                .arg(amount)
                .arg(n)
                .invoke(&mut *conn.borrow_mut())
                .unwrap();
            let want = tollgate::limits::lease::lease_room(used, max, held, amount, n);
            prop_assert_eq!(
                got,
                want,
                "used {} max {} held {} amount {} n {}",
                used,
                max,
                held,
                amount,
                n
            );
            Ok(())
        })
        .unwrap();
}
