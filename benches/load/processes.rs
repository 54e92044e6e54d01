//! The processes a scenario runs: redis-server, tollgate, and how busy the machine is.

use super::*;

// Processes (started by the harness, `tollgate_testkit`)

/// `--redis-arg 'NAME VALUE'` pairs as `redis-server` arguments: names get their `--`.
pub(crate) fn redis_args(extra: &[String]) -> Vec<String> {
    extra
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i % 2 == 0 && !a.starts_with("--") {
                format!("--{a}")
            } else {
                a.clone()
            }
        })
        .collect()
}

/// A tollgate process (the harness's `Process`, killed when dropped) and its address.
pub(crate) struct Tollgate {
    pub(crate) proc: Process,
    pub(crate) addr: SocketAddr,
}

/// `--tollgate` on `redis_url` with its own defaults, once it is ready.
pub(crate) async fn start_tollgate(opts: &Opts, redis_url: &str) -> Tollgate {
    let threads = opts.tollgate_threads.map(|t| t.to_string());
    let lease_ms = opts.lease_ms.map(|t| t.to_string());
    let mut args = vec!["--redis-url", redis_url];
    if let Some(t) = &threads {
        args.extend(["--worker-threads", t]);
    }
    if let Some(ms) = &lease_ms {
        args.extend(["--lease-ms", ms]);
    }
    let proc = Process::launch(
        &opts.tollgate_bin,
        &args,
        &[("RUST_LOG", "warn")],
        Duration::from_secs(20),
    )
    .await;
    let addr = proc.addr();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("http://{addr}/ready")).send().await
            && r.status().is_success()
        {
            return Tollgate { proc, addr };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "tollgate did not become ready: {}",
        std::fs::read_to_string(&proc.log).unwrap_or_default()
    );
}

/// Busy and idle ticks of the whole machine, from the first line of /proc/stat.
pub(crate) fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy, get(3) + get(4))
}

/// CPU used by processes this tool did not start, in cores, over `window`.
pub(crate) fn foreign_load(window: Duration) -> f64 {
    let (b0, _) = machine_ticks();
    std::thread::sleep(window);
    let (b1, _) = machine_ticks();
    (b1 - b0) as f64 / TICKS_PER_SEC / window.as_secs_f64()
}

/// Waits (up to `patience`) until other processes use less than `max_cores`, since the
/// machine may be shared (builds, test suites); says so if it never got quiet.
pub(crate) fn wait_until_quiet(max_cores: f64, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let load = foreign_load(Duration::from_millis(500));
        if load <= max_cores {
            return;
        }
        if Instant::now() >= deadline {
            println!(
                "  WARNING: machine still busy ({:.0}% CPU used by other processes); measuring anyway",
                load * 100.0
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
