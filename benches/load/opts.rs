//! The load tool's flags.

use super::*;

#[derive(Debug, Clone)]
pub(crate) struct Opts {
    pub(crate) scenarios: Vec<char>,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) prefill: Duration,
    /// Open loop at this many requests per second in all (default: closed loop).
    pub(crate) rate: Option<f64>,
    pub(crate) client_threads: usize,
    pub(crate) tollgate_threads: Option<usize>,
    /// `--lease-ms` for every tollgate (leases; off by default).
    pub(crate) lease_ms: Option<u64>,
    pub(crate) filler_configs: usize,
    pub(crate) perf_dir: Option<PathBuf>,
    /// Before each measured phase, wait until other processes use at most this many cores…
    pub(crate) quiet: f64,
    /// …for at most this many seconds.
    pub(crate) quiet_patience: u64,
    /// A phase during which other processes used more than this many cores…
    pub(crate) max_foreign: f64,
    /// …is measured again, up to this many times in all.
    pub(crate) attempts: usize,
    pub(crate) tollgate_bin: PathBuf,
    pub(crate) redis_bin: String,
    /// Extra `redis-server` arguments, e.g. `--hash-max-listpack-entries 64`.
    pub(crate) redis_args: Vec<String>,
    /// Another version of `batch.lua` (its library fragments, check and usage prepended) to
    /// measure directly next to the built-in one, on the same Redis and counters.
    pub(crate) alt_script: Option<PathBuf>,
    /// Tollgate processes of scenario `e`.
    pub(crate) fleet: usize,
}

pub(crate) fn usage(code: i32) -> ! {
    eprintln!(
        "usage: cargo bench --bench load -- [--scenario a,b,c,d,e|all] [--fleet 8] [--concurrency 32] \
         [--duration 10] [--warmup 2] [--prefill 65] [--rate R] [--client-threads 1] [--tollgate-threads N] [--lease-ms MS] \
         [--configs 10000] [--perf DIR] [--quiet 0.1] [--quiet-patience 120] [--max-foreign 0.3] [--attempts 3] [--tollgate PATH] [--redis-server PATH] [--redis-arg 'NAME VALUE'] [--alt-script FILE]"
    );
    std::process::exit(code)
}

pub(crate) fn parse_opts() -> Opts {
    let mut o = Opts {
        scenarios: vec!['a', 'b', 'c', 'd', 'e'],
        concurrency: 32,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        prefill: Duration::from_secs(65),
        rate: None,
        client_threads: 1,
        tollgate_threads: None,
        lease_ms: None,
        filler_configs: 10_000,
        perf_dir: None,
        quiet: 0.1,
        quiet_patience: 120,
        max_foreign: 0.3,
        attempts: 3,
        tollgate_bin: PathBuf::from(env!("CARGO_BIN_EXE_tollgate")),
        redis_bin: std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
        redis_args: Vec::new(),
        alt_script: None,
        fleet: 8,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        // `cargo bench` passes `--bench` to every bench binary.
        if flag == "--bench" {
            continue;
        }
        let mut value = || args.next().unwrap_or_else(|| usage(2));
        let secs = |v: String| Duration::from_secs_f64(v.parse().unwrap_or_else(|_| usage(2)));
        let num = |v: String| v.parse::<usize>().unwrap_or_else(|_| usage(2));
        match flag.as_str() {
            "--scenario" => {
                let v = value();
                o.scenarios = if v == "all" {
                    vec!['a', 'b', 'c', 'd', 'e']
                } else {
                    v.split(',')
                        .map(|s| match s.trim() {
                            s @ ("a" | "b" | "c" | "d" | "e") => s.chars().next().unwrap(),
                            _ => usage(2),
                        })
                        .collect()
                }
            }
            "--concurrency" => o.concurrency = num(value()).max(1),
            "--fleet" => o.fleet = num(value()).max(1),
            "--duration" => o.duration = secs(value()),
            "--warmup" => o.warmup = secs(value()),
            "--prefill" => o.prefill = secs(value()),
            "--rate" => o.rate = Some(value().parse().unwrap_or_else(|_| usage(2))),
            "--client-threads" => o.client_threads = num(value()).max(1),
            "--tollgate-threads" => o.tollgate_threads = Some(num(value()).max(1)),
            "--lease-ms" => o.lease_ms = Some(num(value()) as u64),
            "--configs" => o.filler_configs = num(value()).max(3),
            "--quiet" => o.quiet = value().parse().unwrap_or_else(|_| usage(2)),
            "--max-foreign" => o.max_foreign = value().parse().unwrap_or_else(|_| usage(2)),
            "--attempts" => o.attempts = num(value()).max(1),
            "--quiet-patience" => o.quiet_patience = num(value()) as u64,
            "--perf" => o.perf_dir = Some(PathBuf::from(value())),
            "--tollgate" => o.tollgate_bin = PathBuf::from(value()),
            "--redis-server" => o.redis_bin = value(),
            "--alt-script" => o.alt_script = Some(PathBuf::from(value())),
            "--redis-arg" => o
                .redis_args
                .extend(value().split_whitespace().map(String::from)),
            "-h" | "--help" => usage(0),
            _ => usage(2),
        }
    }
    o
}
