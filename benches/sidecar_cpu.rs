//! The sidecar's own CPU per check: what one `POST /v1/check` of 3 matching configs
//! (9 limits) costs the tollgate process, on the embedded store and on Redis, with 1
//! and 2 worker threads.
//!
//! ```text
//! cargo bench --bench sidecar_cpu -- --store memory,redis --threads 1,2 --repeat 3
//! ```
//!
//! Per store and thread count it starts the release `tollgate` binary (and its own
//! `redis-server` on a free port for `redis`), creates the 3 configs through the
//! management API, drives checks over `--concurrency` (32) HTTP/1.1 keep-alive
//! connections for `--warmup` + `--duration` seconds (closed loop, as `wrk` does), and
//! reads the tollgate process's utime + stime from `/proc/<pid>/stat` around the
//! measured window. CPU per check is that CPU time over the checks answered: unlike
//! checks/s it hardly moves when other processes share the machine. Each measurement
//! runs `--repeat` times (a fresh process each time); the medians are printed.
//! `--perf FILE` records the last run's tollgate with `perf record -e cpu-clock` (no
//! call graphs: release binaries have symbols, not debug info). `--tollgate
//! before=PATH,after=PATH` compares builds in one run, their runs interleaved (default:
//! the binary cargo built). `--transport tcp,unix` also measures each build over a
//! Unix-domain socket (`--listen-unix`): same checks, same client, no TCP stack. A
//! `floor=target/release/http_floor` build (testkit's) measures the HTTP floor.
//!
//! Never run by CI; nothing asserts on time.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_testkit::proc_stats::cpu_ticks;
use tollgate_testkit::{Process, RedisServer};

const CHECK_BODY: &str =
    r#"{"model":"gpt-4o","virtual_key":"vk-1","user":"u-1","tokens":10,"cost":0.001}"#;

struct Opts {
    stores: Vec<String>,
    threads: Vec<u16>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    repeat: usize,
    perf: Option<String>,
    /// (label, binary).
    builds: Vec<(String, std::path::PathBuf)>,
    transports: Vec<Transport>,
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Tcp,
    Unix,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Unix => "unix",
        }
    }
}

/// Where the workers connect.
#[derive(Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

fn usage(code: i32) -> ! {
    eprintln!(
        "usage: cargo bench --bench sidecar_cpu -- [--store memory,redis] [--threads 1,2] \
         [--concurrency 32] [--warmup 2] [--duration 10] [--repeat 3] [--perf FILE] \
         [--tollgate LABEL=PATH,…] [--transport tcp,unix]"
    );
    std::process::exit(code)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        stores: vec!["memory".into(), "redis".into()],
        threads: vec![1, 2],
        concurrency: 32,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(10),
        repeat: 3,
        perf: None,
        builds: vec![("this build".into(), tollgate_testkit::tollgate_binary())],
        transports: vec![Transport::Tcp],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--bench" {
            continue;
        }
        let mut value = || args.next().unwrap_or_else(|| usage(2));
        let secs = |v: String| Duration::from_secs_f64(v.parse().unwrap_or_else(|_| usage(2)));
        match flag.as_str() {
            "--store" => {
                o.stores = value().split(',').map(|s| s.trim().to_string()).collect();
                if o.stores.iter().any(|s| s != "memory" && s != "redis") {
                    usage(2)
                }
            }
            "--threads" => {
                o.threads = value()
                    .split(',')
                    .map(|t| t.trim().parse().unwrap_or_else(|_| usage(2)))
                    .collect()
            }
            "--concurrency" => o.concurrency = value().parse().unwrap_or_else(|_| usage(2)),
            "--warmup" => o.warmup = secs(value()),
            "--duration" => o.duration = secs(value()),
            "--repeat" => o.repeat = value().parse::<usize>().unwrap_or_else(|_| usage(2)).max(1),
            "--perf" => o.perf = Some(value()),
            "--tollgate" => {
                o.builds = value()
                    .split(',')
                    .map(|b| match b.split_once('=') {
                        Some((label, path)) => (label.to_string(), path.into()),
                        None => (b.to_string(), b.into()),
                    })
                    .collect()
            }
            "--transport" => {
                o.transports = value()
                    .split(',')
                    .map(|t| match t.trim() {
                        "tcp" => Transport::Tcp,
                        "unix" => Transport::Unix,
                        _ => usage(2),
                    })
                    .collect()
            }
            "-h" | "--help" => usage(0),
            _ => usage(2),
        }
    }
    o
}

/// The 3 configs `CHECK_BODY` matches (global, its virtual key's, its user's), each
/// with a request, a token and a budget limit that never refuse.
fn configs() -> Vec<serde_json::Value> {
    let limits = |mut body: serde_json::Value| {
        body["rate_limit"] = json!({"request_max_limit": 1_000_000_000u64, "request_reset_duration": "1m",
                                     "token_max_limit": 1_000_000_000_000u64, "token_reset_duration": "1m"});
        body["budgets"] = json!([{"max_limit": 1_000_000.0, "reset_duration": "1d"}]);
        body
    };
    vec![
        limits(json!({"model_name": "*", "scope": "global"})),
        limits(json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "vk-1"})),
        limits(json!({"model_name": "*", "scope": "user", "scope_id": "u-1"})),
    ]
}

struct Run {
    checks: u64,
    seconds: f64,
    cpu_us_per_check: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// One HTTP/1.1 keep-alive connection to `target`.
async fn connect(target: &Target) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    match target {
        Target::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender
        }
        Target::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await.unwrap();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender
        }
    }
}

async fn worker(target: Target, measure_from: Instant, end: Instant) -> (Histogram<u64>, u64) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut errors = 0;
    let mut sender = connect(&target).await;
    let host = "localhost";
    let body = Bytes::from_static(CHECK_BODY.as_bytes());
    loop {
        let started = Instant::now();
        if started >= end || sender.ready().await.is_err() {
            break;
        }
        let req = Request::post("/v1/check")
            .header(HOST, host)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let ok = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                status == 200
                    && body
                        .is_ok_and(|b| b.windows(11).filter(|w| w == b"\"config_id\"").count() == 9)
            }
            Err(_) => false,
        };
        if started >= measure_from && Instant::now() <= end {
            if ok {
                hist.record(started.elapsed().as_nanos() as u64).unwrap();
            } else {
                errors += 1;
            }
        }
    }
    (hist, errors)
}

async fn run_once(
    opts: &Opts,
    bin: &std::path::Path,
    store: &str,
    threads: u16,
    transport: Transport,
    perf: Option<&str>,
) -> Run {
    let redis = (store == "redis").then(RedisServer::start);
    let url = redis.as_ref().map(|r| r.url());
    let threads = threads.to_string();
    let mut args = vec!["--worker-threads", threads.as_str()];
    if let Some(url) = &url {
        args.extend(["--redis-url", url.as_str()]);
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tollgate.sock");
    let sock_arg = sock.display().to_string();
    if transport == Transport::Unix {
        args.extend(["--listen-unix", sock_arg.as_str()]);
    }
    let proc = Process::launch(bin, &args, &[("RUST_LOG", "warn")], Duration::from_secs(60)).await;
    let addr = proc.addr();
    let http = reqwest::Client::new();
    let ready = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < ready, "tollgate did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for body in configs() {
        let r = http
            .post(format!("http://{addr}/api/governance/model-configs"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let measure_from = Instant::now() + opts.warmup;
    let end = measure_from + opts.duration;
    let target = match transport {
        Transport::Tcp => Target::Tcp(addr),
        Transport::Unix => Target::Unix(sock),
    };
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|_| tokio::spawn(worker(target.clone(), measure_from, end)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let pid = proc.pid();
    let recorder = perf.map(|out| {
        Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F", "999", "-p"])
            .arg(pid.to_string())
            .args(["-o", out, "--", "sleep"])
            .arg(format!("{:.3}", opts.duration.as_secs_f64()))
            .stdout(Stdio::null())
            .spawn()
            .expect("perf must be installed for --perf")
    });
    let (t0, ticks0) = (Instant::now(), cpu_ticks(pid));
    tokio::time::sleep_until(end.into()).await;
    let (seconds, ticks) = (t0.elapsed().as_secs_f64(), cpu_ticks(pid) - ticks0);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut errors = 0;
    for w in workers {
        let (h, e) = w.await.unwrap();
        hist.add(h).unwrap();
        errors += e;
    }
    if let Some(mut r) = recorder {
        let _ = r.wait();
    }
    drop(proc);
    let checks = hist.len();
    Run {
        checks,
        seconds,
        cpu_us_per_check: ticks as f64 / 100.0 * 1e6 / checks.max(1) as f64,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1e6,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1e6,
        errors,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let opts = parse_opts();
    // One client thread: the other CPU is the sidecar's (and Redis's).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Every build over every transport, interleaved within each repeat.
    let mut variants: Vec<(String, &std::path::Path, Transport)> = Vec::new();
    for (label, bin) in &opts.builds {
        for &t in &opts.transports {
            let label = match opts.transports.len() {
                1 => label.clone(),
                _ => format!("{label} over {}", t.as_str()),
            };
            variants.push((label, bin.as_path(), t));
        }
    }
    let mut rows = Vec::new();
    rt.block_on(async {
        let last = (opts.stores.len(), opts.threads.len());
        for (si, store) in opts.stores.iter().enumerate() {
            for (ti, &threads) in opts.threads.iter().enumerate() {
                let mut runs: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
                for r in 0..opts.repeat {
                    for (bi, (label, bin, transport)) in variants.iter().enumerate() {
                        let perf = (si + 1, ti + 1) == last
                            && r + 1 == opts.repeat
                            && bi + 1 == variants.len();
                        let perf = opts.perf.as_deref().filter(|_| perf);
                        let run = run_once(&opts, bin, store, threads, *transport, perf).await;
                        println!(
                            "{label}, {store}, {threads} worker thread(s), run {}: {:.0} checks/s, {:.1} µs CPU/check, p50 {:.3} ms, p99 {:.3} ms, {} errors",
                            r + 1,
                            run.checks as f64 / run.seconds,
                            run.cpu_us_per_check,
                            run.p50_ms,
                            run.p99_ms,
                            run.errors
                        );
                        runs[bi].push(run);
                    }
                }
                for ((label, ..), runs) in variants.iter().zip(runs) {
                    rows.push((
                        label.clone(),
                        store.clone(),
                        threads,
                        median(runs.iter().map(|r| r.checks as f64 / r.seconds).collect()),
                        median(runs.iter().map(|r| r.cpu_us_per_check).collect()),
                        median(runs.iter().map(|r| r.p50_ms).collect()),
                        median(runs.iter().map(|r| r.p99_ms).collect()),
                    ));
                }
            }
        }
    });
    println!(
        "\nMedians of {} runs, {} connections, {:.0} s measured each:\n",
        opts.repeat,
        opts.concurrency,
        opts.duration.as_secs_f64()
    );
    println!(
        "| build | store | worker threads | checks/s | sidecar CPU µs/check | p50 ms | p99 ms |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (label, store, threads, rate, cpu, p50, p99) in rows {
        println!("| {label} | {store} | {threads} | {rate:.0} | {cpu:.1} | {p50:.3} | {p99:.3} |");
    }
}
