//! The Lua counters (`lua/lib/windows.lua`, `lua/lib/periods.lua`) and the Rust ones
//! (`src/limits`) must agree step by step: the Redis store and the memory store then
//! enforce the same limits. Times are passed explicitly here, so every boundary can be
//! exercised; the production scripts take them from Redis `TIME`. The harnesses run on
//! `scripts::LIB`, the same composed fragments as the production scripts.

mod common;

use common::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::{Cell, RefCell};
use tollgate::limits::period::PeriodGrid;
use tollgate::limits::thresholds::{Fired, reached};
use tollgate::limits::window::SlidingWindow;
use tollgate::model::duration::{DAY_MS, MONTH_MS, WEEK_MS, YEAR_MS};
use tollgate::store::redis::packed_limits::grid_args;
use tollgate::store::redis::scripts::{ALERT_LIB, LIB};

/// Runs one window operation at an explicit time, keeps the window in field `w` (and its
/// cold buckets in `w:c`) of the hash KEYS[1] the way the scripts keep them, and reports
/// its state: total, reset, retry, number of sub-buckets.
/// ARGV: op (add|refund|peek), window length, now, amount, max, reservation time of a
/// refund (0 = not known)
const WINDOW_HARNESS: &str = r#"
local w = win_open(redis.call('HGET', KEYS[1], 'w'), tonumber(ARGV[2]), KEYS[1], 'w')
local now, amount, max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
win_evict(w, now)
if ARGV[1] == 'add' then win_add(w, now, amount) end
if ARGV[1] == 'refund' then win_refund(w, amount, tonumber(ARGV[6])) end
local fields = {}
win_fields(w, fields)
redis.call('HSET', KEYS[1], unpack(fields))
return { w.total, win_reset_after(w, now), win_retry_after(w, now, max, amount), w.n }
"#;

/// KEYS none   ARGV: now, length, mode, param → {start, end}
const PERIOD_HARNESS: &str = r#"
local s, e = period_bounds(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
return { s, e }
"#;

/// Adds to a window at an explicit time and decides its threshold events as the batch
/// script does (`alert_expire`, then `alert_rise`), keeping the window (and the level it
/// fired) in field `w` of KEYS[1]. ARGV: window length, now, amount, max, thresholds...
/// Returns {total, level × 1000, then the positions (from 1) of the thresholds fired}.
const ALERT_HARNESS: &str = r#"
local len, now, amount, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local th = {}
for i = 5, #ARGV do th[#th + 1] = tonumber(ARGV[i]) end
local lim = { kind = 'r', len = len, max = cap, written = false,
  state = win_open(redis.call('HGET', KEYS[1], 'w'), len, KEYS[1], 'w') }
win_evict(lim.state, now)
alert_expire(lim, now)
win_add(lim.state, now, amount)
local events = {}
alert_rise(lim, th, now, 1, 0, events)
local fields = {}
win_fields(lim.state, fields)
redis.call('HSET', KEYS[1], unpack(fields))
local out = { lim.state.total, lim.state.level * 1000 }
for _, e in ipairs(events) do out[#out + 1] = e[3] end
return out
"#;

/// Time to the next operation: a random gap, or exactly one window (±1ms) after the
/// last write, where usage leaves the window.
#[derive(Debug, Clone, Copy)]
enum Gap {
    Random(i64),
    WindowAfterLastWrite(i64),
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        gap: Gap,
        amount: i64,
    },
    /// `back`: the reservation was made this many hundredths of a window before now.
    Refund {
        gap: Gap,
        amount: i64,
        back: Option<i64>,
    },
    Peek {
        gap: Gap,
        amount: i64,
    },
}

fn gap() -> impl Strategy<Value = Gap> {
    prop_oneof![
        4 => (0i64..700).prop_map(Gap::Random),
        1 => (0i64..3000).prop_map(Gap::Random),
        1 => (-1i64..=1).prop_map(Gap::WindowAfterLastWrite),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (gap(), 1i64..20).prop_map(|(gap, amount)| Op::Add { gap, amount }),
        2 => (gap(), 1i64..40, prop::option::of(0i64..150))
            .prop_map(|(gap, amount, back)| Op::Refund { gap, amount, back }),
        2 => (gap(), 0i64..20).prop_map(|(gap, amount)| Op::Peek { gap, amount }),
    ]
}

#[test]
fn sliding_window_matches_rust() {
    let redis = RedisServer::start();
    let conn = RefCell::new(redis.conn());
    let script = redis::Script::new(&format!("{LIB}\n{WINDOW_HARNESS}"));
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let case = Cell::new(0);
    runner
        .run(
            &(
                prop_oneof![Just(1i64), 1i64..100, 100i64..5_000, Just(60_000i64)],
                1i64..60,
                prop::collection::vec(op(), 1..120),
            ),
            |(window_ms, max, ops)| {
                case.set(case.get() + 1);
                let key = format!("parity:{}", case.get());
                let mut rust = SlidingWindow::default();
                let mut now = 1_795_000_000_000i64;
                let mut last_write = now;
                for op in ops {
                    let (name, gap, amount, back) = match op {
                        Op::Add { gap, amount } => ("add", gap, amount, None),
                        Op::Refund { gap, amount, back } => ("refund", gap, amount, back),
                        Op::Peek { gap, amount } => ("peek", gap, amount, None),
                    };
                    now = match gap {
                        Gap::Random(g) => now + g,
                        Gap::WindowAfterLastWrite(d) => (last_write + window_ms + d).max(now),
                    };
                    if name == "add" {
                        last_write = now;
                    }
                    let reserved_at = back.map(|b| now - b * window_ms / 100);
                    rust.evict(now, window_ms);
                    match name {
                        "add" => rust.add(now, amount),
                        "refund" => rust.refund(amount, reserved_at),
                        _ => {}
                    }
                    let expected = vec![
                        rust.used(),
                        rust.reset_after_ms(now, window_ms),
                        rust.retry_after_ms(now, window_ms, max, amount),
                        rust.bucket_count() as i64,
                    ];
                    let got: Vec<i64> = script
                        .key(&key)
                        .arg(name)
                        .arg(window_ms)
                        .arg(now)
                        .arg(amount)
                        .arg(max)
                        .arg(reserved_at.unwrap_or(0))
                        .invoke(&mut *conn.borrow_mut())
                        .unwrap();
                    prop_assert_eq!(
                        &got,
                        &expected,
                        "{} {} at {} (window {}ms, max {})",
                        name,
                        amount,
                        now,
                        window_ms,
                        max
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn window_length_change_matches_rust() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let script = redis::Script::new(&format!("{LIB}\n{WINDOW_HARNESS}"));
    let mut rust = SlidingWindow::default();
    let mut now = 1_795_000_000_000i64;
    for (window, gap, amount) in [
        (3_000, 0, 2),
        (3_000, 150, 3),
        (3_000, 700, 1),
        (60_000, 10, 1),
        (60_000, 4_000, 2),
        (1_000, 5, 1),
        (1_000, 61_000, 1),
    ] {
        now += gap;
        rust.evict(now, window);
        rust.add(now, amount);
        let got: Vec<i64> = script
            .key("regrid")
            .arg("add")
            .arg(window)
            .arg(now)
            .arg(amount)
            .arg(100)
            .arg(0)
            .invoke(&mut conn)
            .unwrap();
        assert_eq!(got[0], rust.used(), "total after window {window}");
        assert_eq!(got[1], rust.reset_after_ms(now, window));
    }
}

fn grid() -> impl Strategy<Value = PeriodGrid> {
    let lens = prop_oneof![
        1u64..(2 * DAY_MS),
        Just(DAY_MS),
        Just(WEEK_MS),
        Just(MONTH_MS),
        Just(3 * MONTH_MS),
        Just(YEAR_MS),
        Just(2 * YEAR_MS),
        1u64..(3 * YEAR_MS),
    ];
    (lens, any::<bool>(), 0i64..4_102_444_800_000)
        .prop_map(|(len, aligned, created)| PeriodGrid::new(len, aligned, created))
}

#[test]
fn budget_periods_match_rust() {
    let redis = RedisServer::start();
    let conn = RefCell::new(redis.conn());
    let script = redis::Script::new(&format!("{LIB}\n{PERIOD_HARNESS}"));
    let check = |grid: PeriodGrid, now: i64| -> Result<(), TestCaseError> {
        let (mode, param, len) = grid_args(grid);
        let got: Vec<i64> = script
            .arg(now)
            .arg(len)
            .arg(mode)
            .arg(param)
            .invoke(&mut *conn.borrow_mut())
            .unwrap();
        let (start, end) = grid.bounds(now);
        prop_assert_eq!(got, vec![start, end], "{:?} at {}", grid, now);
        Ok(())
    };
    // Calendar edges: month ends, leap days, year ends, Mondays.
    let edges = [
        "2024-02-29T23:59:59.999Z",
        "2024-03-01T00:00:00Z",
        "2025-12-31T23:59:59.999Z",
        "2026-01-01T00:00:00Z",
        "2026-11-23T00:00:00Z",
        "2026-11-22T23:59:59.999Z",
        "2100-02-28T12:00:00Z",
        "1970-01-01T00:00:00Z",
    ];
    for edge in edges {
        let now = chrono::DateTime::parse_from_rfc3339(edge)
            .unwrap()
            .timestamp_millis();
        for len in [DAY_MS, WEEK_MS, MONTH_MS, 3 * MONTH_MS, YEAR_MS] {
            check(PeriodGrid::new(len, true, 0), now).unwrap();
        }
    }
    let mut runner = TestRunner::new(Config {
        cases: 400,
        ..Config::default()
    });
    runner
        .run(&(grid(), 0i64..4_102_444_800_000), |(grid, now)| {
            check(grid, now)
        })
        .unwrap();
}

/// Windows written in the earlier one-field layout (g, total, then index, count, last per
/// bucket) are read as they were, and rewritten in the hot/cold layout.
#[test]
fn windows_in_the_one_field_layout_are_read() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let script = redis::Script::new(&format!("{LIB}\n{WINDOW_HARNESS}"));
    let window = 3_000i64; // 100 ms buckets
    let t0 = 1_795_000_000_000i64;
    let adds = [(0, 2), (250, 3), (520, 4), (900, 1), (1_400, 5)];
    let mut rust = SlidingWindow::default();
    let mut old = Vec::new();
    for v in [100.0f64, 15.0] {
        old.extend_from_slice(&v.to_le_bytes());
    }
    for (dt, amount) in adds {
        let at = t0 + dt;
        rust.evict(at, window);
        rust.add(at, amount);
        for v in [(at / 100) as f64, amount as f64, at as f64] {
            old.extend_from_slice(&v.to_le_bytes());
        }
    }
    let _: () = redis::cmd("HSET")
        .arg("old")
        .arg("w")
        .arg(old)
        .query(&mut conn)
        .unwrap();
    for (step, now) in [t0 + 1_500, t0 + 3_100, t0 + 3_600, t0 + 4_450]
        .into_iter()
        .enumerate()
    {
        let op = if step == 1 { "add" } else { "peek" };
        rust.evict(now, window);
        if op == "add" {
            rust.add(now, 1);
        }
        let got: Vec<i64> = script
            .key("old")
            .arg(op)
            .arg(window)
            .arg(now)
            .arg(1)
            .arg(20)
            .arg(0)
            .invoke(&mut conn)
            .unwrap();
        assert_eq!(
            got,
            vec![
                rust.used(),
                rust.reset_after_ms(now, window),
                rust.retry_after_ms(now, window, 20, 1),
                rust.bucket_count() as i64
            ],
            "at +{}",
            now - t0
        );
    }
}

/// Threshold events on a sliding window: the same thresholds fire at the same usage, once
/// per window length, in Lua and in Rust, over random traffic (the fired level lives in
/// the window's hot field between calls, as in production).
#[test]
fn window_threshold_events_match_rust() {
    let redis = RedisServer::start();
    let conn = RefCell::new(redis.conn());
    let script = redis::Script::new(&format!("{}\n{ALERT_HARNESS}", ALERT_LIB.source));
    let thresholds = [0.25, 0.5, 0.8, 1.0, 1.5];
    let mut runner = TestRunner::new(Config {
        cases: 40,
        ..Config::default()
    });
    let case = Cell::new(0);
    runner
        .run(
            &(
                prop_oneof![Just(1_000i64), 100i64..5_000],
                10i64..60,
                prop::collection::vec((0i64..800, 0i64..12), 1..80),
            ),
            |(window_ms, max, steps)| {
                case.set(case.get() + 1);
                let key = format!("alerts:{}", case.get());
                let (mut window, mut fired) = (SlidingWindow::default(), Fired::default());
                let mut now = 1_795_000_000_000i64;
                for (gap, amount) in steps {
                    now += gap;
                    window.evict(now, window_ms);
                    fired = fired.in_window(now, window_ms);
                    window.add(now, amount);
                    let (hits, next) = reached(&thresholds, fired, window.used(), max, now);
                    fired = next;
                    let mut expected = vec![window.used(), (fired.level * 1000.0) as i64];
                    expected.extend(hits.iter().map(|&h| h as i64 + 1));
                    let mut call = script.key(&key);
                    call.arg(window_ms).arg(now).arg(amount).arg(max);
                    for t in thresholds {
                        call.arg(t);
                    }
                    let got: Vec<i64> = call.invoke(&mut *conn.borrow_mut()).unwrap();
                    prop_assert_eq!(got, expected, "at {} adding {}", now, amount);
                }
                Ok(())
            },
        )
        .unwrap();
}
