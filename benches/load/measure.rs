//! A measured phase: CPU from /proc around it, its report, the reference script, and the counters read from each tollgate.

use super::*;

pub(crate) struct Measured {
    pub(crate) tally: Tally,
    pub(crate) seconds: f64,
    /// (process, CPU cores used during the measured phase).
    pub(crate) cpu: Vec<(String, f64)>,
}

impl Measured {
    /// CPU time, in µs per call, of the processes whose name passes `which`.
    pub(crate) fn cpu_per_call(&self, which: impl Fn(&str) -> bool) -> f64 {
        let cores: f64 = self.cpu.iter().filter(|(n, _)| which(n)).map(|c| c.1).sum();
        cores * 1e6 / self.rate().max(1e-9)
    }

    pub(crate) fn foreign(&self) -> f64 {
        self.cpu
            .iter()
            .find(|(n, _)| n == "other processes")
            .map_or(0.0, |c| c.1)
    }

    pub(crate) fn rate(&self) -> f64 {
        self.tally.hist.len() as f64 / self.seconds
    }

    pub(crate) fn pct(&self, q: f64) -> f64 {
        self.tally.hist.value_at_quantile(q) as f64 / 1e6
    }
}

/// Runs `workers`, samples the CPU use of `procs` over the measured window (and runs
/// `perf` on the tollgates if asked), and merges the workers' tallies.
pub(crate) async fn measure(
    w: Window,
    procs: Vec<(String, String)>,
    perf: Option<(PathBuf, Vec<u32>)>,
    workers: Vec<tokio::task::JoinHandle<Tally>>,
) -> Measured {
    tokio::time::sleep_until(w.measure_from.into()).await;
    let perf = perf.map(|(out, pids)| {
        let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
        let secs = (w.end - Instant::now()).as_secs_f64();
        Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F", "999"])
            .args(["--call-graph", "dwarf,16384", "-p", &pids.join(",")])
            .arg("-o")
            .arg(&out)
            .args(["--", "sleep", &format!("{secs:.3}")])
            .stdout(Stdio::null())
            .spawn()
            .expect("perf must be installed for --perf")
    });
    let mut procs = procs;
    if let Some(p) = &perf {
        procs.push(("perf".into(), p.id().to_string()));
    }
    let t0 = Instant::now();
    let machine0 = machine_ticks();
    let before: Vec<u64> = procs.iter().map(|(_, pid)| cpu_ticks(pid)).collect();
    tokio::time::sleep_until(w.end.into()).await;
    let seconds = t0.elapsed().as_secs_f64();
    let machine1 = machine_ticks();
    let mut ours = 0.0;
    let mut cpu: Vec<(String, f64)> = procs
        .iter()
        .zip(before)
        .map(|((name, pid), b)| {
            let used = (cpu_ticks(pid) - b) as f64 / TICKS_PER_SEC;
            ours += used;
            (name.clone(), used / seconds)
        })
        .collect();
    let busy = (machine1.0 - machine0.0) as f64 / TICKS_PER_SEC;
    let idle = (machine1.1 - machine0.1) as f64 / TICKS_PER_SEC;
    cpu.push(("other processes".into(), (busy - ours).max(0.0) / seconds));
    cpu.push(("idle".into(), idle / seconds));
    let mut tally = Tally::new();
    for wk in workers {
        tally.merge(&wk.await.unwrap());
    }
    if let Some(mut p) = perf {
        let _ = p.wait();
    }
    Measured {
        tally,
        seconds: (w.end - w.measure_from).as_secs_f64(),
        cpu,
    }
}

pub(crate) fn report(label: &str, m: &Measured) {
    let t = &m.tally;
    let n = t.hist.len().max(1) as f64;
    println!(
        "  {label:<34} {:>9.0}/s  p50 {:>6.3} ms  p99 {:>6.3} ms  p99.9 {:>6.3} ms  max {:>7.3} ms",
        m.rate(),
        m.pct(0.5),
        m.pct(0.99),
        m.pct(0.999),
        t.hist.max() as f64 / 1e6
    );
    println!(
        "  {:<34} allowed {:.2}%  denied {:.2}%  other {}  errors {}  store fallbacks {}",
        "",
        100.0 * t.ok as f64 / n,
        100.0 * t.denied as f64 / n,
        t.other,
        t.errors,
        t.fallback
    );
    let cpu: Vec<String> = m
        .cpu
        .iter()
        .map(|(name, cores)| {
            if name == "other processes" || name == "idle" {
                return format!("{name} {:.0}%", cores * 100.0);
            }
            format!(
                "{name} {:.0}% ({:.1} µs/call)",
                cores * 100.0,
                cores * 1e6 / m.rate().max(1e-9)
            )
        })
        .collect();
    println!("  {:<34} CPU: {}", "", cpu.join(", "));
}

/// One measured phase; measured again (up to `--attempts` times) when other processes
/// took more than `--max-foreign` cores meanwhile, since the machine may be shared.
pub(crate) async fn phase(
    opts: &Opts,
    label: &str,
    procs: &[(String, String)],
    perf: Option<(PathBuf, Vec<u32>)>,
    spawn: impl Fn(Window) -> Vec<tokio::task::JoinHandle<Tally>>,
) -> Measured {
    let mut attempt = 1;
    loop {
        tokio::task::block_in_place(|| {
            wait_until_quiet(opts.quiet, Duration::from_secs(opts.quiet_patience))
        });
        let w = Window::new(opts);
        let m = measure(w, procs.to_vec(), perf.clone(), spawn(w)).await;
        let foreign = m.foreign();
        if foreign <= opts.max_foreign || attempt >= opts.attempts {
            report(label, &m);
            return m;
        }
        println!(
            "  {label}: other processes used {:.0}% CPU meanwhile; measuring again",
            foreign * 100.0
        );
        attempt += 1;
    }
}

pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) tollgate: Measured,
    pub(crate) direct_shared: Measured,
    pub(crate) direct_per_conn: Measured,
    /// Mean ops per coalesced script call during the tollgate phase, all processes.
    pub(crate) batch: f64,
    pub(crate) reference: Reference,
}

/// The same-write-count reference script (as many writes as a check), from
/// `redis-benchmark`.
pub(crate) const REFERENCE_SCRIPT: &str = "for i = 1, 6 do redis.call('INCRBY', KEYS[i], 1) end \
     redis.call('PEXPIRE', KEYS[1], 60000) return 1";

pub(crate) struct Reference {
    pub(crate) calls_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) redis_us_per_call: f64,
}

/// Runs the reference script from `redis-benchmark` at the same concurrency, for about
/// `--duration`, and reads Redis's CPU from `/proc` around it.
pub(crate) fn reference_phase(opts: &Opts, redis: &RedisServer) -> Reference {
    wait_until_quiet(opts.quiet, Duration::from_secs(opts.quiet_patience));
    let n = (60_000.0 * opts.duration.as_secs_f64()).max(10_000.0) as u64;
    let pid = redis.pid().expect("redis-server runs").to_string();
    let ticks = cpu_ticks(&pid);
    let started = Instant::now();
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &redis.port.to_string(),
            "-c",
            &opts.concurrency.to_string(),
        ])
        .args(["-n", &n.to_string(), "--csv", "EVAL", REFERENCE_SCRIPT, "6"])
        .args(["{r}1", "{r}2", "{r}3", "{r}4", "{r}5", "{r}6"])
        .output()
        .expect("redis-benchmark must be installed (it ships with redis-server)");
    let seconds = started.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(&pid) - ticks) as f64 / TICKS_PER_SEC;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    // "p99_latency_ms","max_latency_ms": the test name holds commas, so count from the end.
    let fields: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .rsplitn(8, ',')
        .take(7)
        .map(|v| v.trim().trim_matches('"').parse().unwrap_or(0.0))
        .collect();
    // rsplitn yields from the end: max, p99, p95, p50, min, avg, rps.
    let row: Vec<f64> = fields.into_iter().rev().collect();
    let r = Reference {
        calls_per_sec: row.first().copied().unwrap_or(0.0),
        p50_ms: row.get(3).copied().unwrap_or(0.0),
        p99_ms: row.get(5).copied().unwrap_or(0.0),
        redis_us_per_call: cpu * 1e6 / n as f64,
    };
    println!(
        "  reference (6 × INCRBY + PEXPIRE, redis-benchmark, {} conns): {:.0} calls/s, p50 {:.3} ms, \
         p99 {:.3} ms, redis {:.1} µs/call ({n} calls in {seconds:.1} s)",
        opts.concurrency, r.calls_per_sec, r.p50_ms, r.p99_ms, r.redis_us_per_call
    );
    r
}

/// The values of the series named (with their labels, as `/metrics` prints them) at one
/// tollgate now; 0 for a series it has not written.
async fn metric_values<const N: usize>(addr: SocketAddr, series: [&str; N]) -> [f64; N] {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default();
    series.map(|name| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
    })
}

/// Checks answered from leases and by the store, and requests held leased, at one
/// tollgate so far (`--lease-ms`).
pub(crate) async fn lease_counts(addr: SocketAddr) -> [f64; 3] {
    metric_values(
        addr,
        [
            r#"tollgate_lease_checks_total{answer="local"}"#,
            r#"tollgate_lease_checks_total{answer="store"}"#,
            r#"tollgate_lease_held{kind="requests"}"#,
        ],
    )
    .await
}

/// (script calls, ops carried) of `tollgate_store_batch_size` at one tollgate so far.
pub(crate) async fn batch_counts(addr: SocketAddr) -> (f64, f64) {
    let [calls, ops] = metric_values(
        addr,
        [
            "tollgate_store_batch_size_count",
            "tollgate_store_batch_size_sum",
        ],
    )
    .await;
    (calls, ops)
}
