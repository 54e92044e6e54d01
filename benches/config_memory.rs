//! What holding N configs costs one replica, in process and without Redis: the bytes
//! of a loaded snapshot per config (counted by the allocator, so no RSS noise), the
//! peak while loading, and the time to parse the stored JSON and build the snapshot.
//!
//! ```text
//! cargo bench --bench config_memory -- --configs 100000,1000000
//! ```
//!
//! The configs are those of `benches/config_plane.rs` (a virtual key's config with a
//! request, a token and a budget limit), as the store keeps them (the JSON a replica
//! reads back), and the load is the one a starting replica does: parse every stored
//! config (`tollgate::store::parse_configs`, on every CPU), then `Snapshot::reload`.
//! Never run by CI; nothing asserts on time.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;
use tollgate::limits::Snapshot;
use tollgate::model::validate::create_config;
use tollgate_testkit::proc_stats::{TICKS_PER_SEC, cpu_ticks, rss_mb};

/// mimalloc, as the binary uses, counting the bytes live and the peak.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// CPU seconds this process used so far (utime + stime): the machine is shared, so wall
/// time says little.
fn cpu_secs() -> f64 {
    cpu_ticks("self") as f64 / TICKS_PER_SEC
}

/// The stored JSON of `n` configs shaped like `config_plane`'s.
fn stored(n: usize) -> Vec<String> {
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let body = serde_json::json!({"model_name": format!("filler-{i}"), "scope": "virtual_key",
                "scope_id": format!("vk-{i}"),
                "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1m",
                               "token_max_limit": 100000, "token_reset_duration": "1h"},
                "budgets": [{"max_limit": 10, "reset_duration": "1d"}]});
            let c = create_config(serde_json::from_value(body).unwrap(), now).unwrap();
            serde_json::to_string(&c).unwrap()
        })
        .collect()
}

fn run(n: usize) {
    let json = stored(n);
    let json_bytes: usize = json.iter().map(String::len).sum();
    let base = live();
    PEAK.store(base, Ordering::Relaxed);
    let (t, cpu) = (Instant::now(), cpu_secs());
    let configs = tollgate::store::parse_configs(json.iter().map(String::as_str));
    let (parsed, parse_cpu) = (t.elapsed(), cpu_secs() - cpu);
    let after_parse = live() - base;
    let (t, cpu) = (Instant::now(), cpu_secs());
    let snapshot = Snapshot::reload(None, 1, configs, &Snapshot::empty());
    let (built, build_cpu) = (t.elapsed(), cpu_secs() - cpu);
    let held = live() - base;
    let peak = PEAK.load(Ordering::Relaxed) - base;
    println!(
        "\n== {n} configs ({:.0} bytes of stored JSON each) ==",
        json_bytes as f64 / n as f64
    );
    println!(
        "parse {:.2} s wall, {:.2} s CPU ({:.2} µs CPU each) | build the snapshot {:.2} s wall, {:.2} s CPU ({:.2} µs CPU each)",
        parsed.as_secs_f64(),
        parse_cpu,
        parse_cpu * 1e6 / n as f64,
        built.as_secs_f64(),
        build_cpu,
        build_cpu * 1e6 / n as f64
    );
    println!(
        "parsed configs {:.0} B each | snapshot held {:.0} B per config ({:.0} MB) | peak while loading {:.0} MB | process RSS {:.0} MB",
        after_parse as f64 / n as f64,
        held as f64 / n as f64,
        held as f64 / 1e6,
        peak as f64 / 1e6,
        rss_mb("self")
    );
    assert_eq!(snapshot.len(), n);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("cargo bench --bench config_memory -- [--configs 100000,1000000]");
        return;
    }
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--configs")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(|n| n.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| vec![100_000]);
    for n in sizes {
        run(n);
    }
}
