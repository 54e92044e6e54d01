//! Test harness: real `redis-server` processes on free ports, tollgates in-process or as
//! separate processes, and a small JSON client. Never a mocked Redis.
#![allow(dead_code)]

pub mod configs;
pub mod sentinel;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs each named `async fn(Backend)` as two tests: on the memory store and on Redis.
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Memory).await } )*
        }
        mod redis {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Redis).await } )*
        }
    };
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// A `redis-server` of the test's own, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = RedisServer {
            port: 0,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..20 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed? scripts/test.sh installs it)");
    }

    /// Starts the process on `self.port`; false if it did not come up (port taken).
    fn spawn(&mut self) -> bool {
        let child = Command::new(redis_server_binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            let pid = self.child.as_ref().map(|c| c.id());
            if pid.is_some() && self.server_pid() == pid {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Pid of the server answering on our port. It must be our child: when two tests race
    /// for one free port, the loser must not mistake the winner's server for its own.
    fn server_pid(&self) -> Option<u32> {
        let info: String = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("INFO").arg("server").query(&mut c))
            .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
    }

    /// SIGKILL: Redis vanishes mid-stream, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (empty: persistence is off).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn()).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Answer of a request: status, headers, JSON body (Null when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error message of an error answer (Bifrost shape), asserting the shape.
    pub fn message(&self) -> &str {
        assert_eq!(
            self.body["is_bifrost_error"],
            Value::Bool(false),
            "error shape: {}",
            self.body
        );
        assert_eq!(
            self.body["status_code"].as_u64(),
            Some(self.status.as_u16() as u64),
            "{}",
            self.body
        );
        self.body["error"]["message"]
            .as_str()
            .expect("error.message")
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    key: Option<String>,
}

impl Client {
    pub fn new(base: String) -> Self {
        Client {
            base,
            http: reqwest::Client::new(),
            key: None,
        }
    }

    pub fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let req = match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        };
        let resp = req.send().await.expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Creates a config and returns its id, asserting success.
    pub async fn create(&self, body: Value) -> String {
        let a = self.post("/api/governance/model-configs", &body).await;
        assert_eq!(a.status, 200, "create {body}: {}", a.body);
        a.body["model_config"]["id"].as_str().unwrap().to_string()
    }

    pub async fn config(&self, id: &str) -> Value {
        let a = self
            .get(&format!("/api/governance/model-configs/{id}"))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["model_config"].clone()
    }

    pub async fn check(&self, body: Value) -> Answer {
        self.post("/v1/check", &body).await
    }
}

/// Which store a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

/// One tollgate served from this test process, with its Redis if it has one.
pub struct Tollgate {
    pub client: Client,
    pub running: Option<tollgate::Running>,
    pub redis: Option<RedisServer>,
}

/// Behaviour tests must not depend on machine speed: a slow store call waits rather than
/// falling back, and a fallback never admits. Fault tests set their own timeouts.
pub fn settings() -> tollgate::Settings {
    let mut s = tollgate::Settings::for_tests();
    s.config_poll_ms = 100;
    s.store_timeout_ms = 10_000;
    s.on_store_error = tollgate::settings::StoreErrorPolicy::Deny;
    s
}

impl Tollgate {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut tollgate::Settings)) -> Self {
        let mut s = settings();
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis => {
                let r = RedisServer::start();
                s.redis_url = Some(r.url());
                Some(r)
            }
        };
        tweak(&mut s);
        let running = tollgate::start(s).await.expect("tollgate starts");
        let client = Client::new(format!("http://{}", running.addr));
        Tollgate {
            client,
            running: Some(running),
            redis,
        }
    }

    /// Another tollgate on the same Redis (a second replica).
    pub async fn replica(&self, tweak: impl FnOnce(&mut tollgate::Settings)) -> tollgate::Running {
        let mut s = settings();
        s.redis_url = Some(self.redis.as_ref().expect("redis backend").url());
        tweak(&mut s);
        tollgate::start(s).await.expect("replica starts")
    }
}

impl std::ops::Deref for Tollgate {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A tollgate as its own OS process (the built binary), killed when dropped.
pub struct Process {
    pub child: Child,
    pub client: Client,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    pub async fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::spawn_wrapped(None, args, envs).await
    }

    /// `wrapper`: a program to run tollgate under (e.g. `faketime`), with its arguments.
    /// Retries on another port when the chosen one was taken meanwhile.
    pub async fn spawn_wrapped(
        wrapper: Option<&[&str]>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        for _ in 0..5 {
            let mut p = Self::spawn_once(wrapper, args, envs);
            if p.wait_healthy().await {
                return p;
            }
            assert!(
                p.stderr().contains("cannot listen"),
                "tollgate did not start: {}",
                p.stderr()
            );
        }
        panic!("no free port for tollgate after 5 attempts");
    }

    fn spawn_once(wrapper: Option<&[&str]>, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tollgate.log");
        let listen = format!("127.0.0.1:{}", free_port());
        let binary = env!("CARGO_BIN_EXE_tollgate");
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        // Its own process group, so a wrapper's children (faketime forks) die with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.args(["--listen", &listen]);
        if !args.contains(&"--config-poll-ms") {
            cmd.args(["--config-poll-ms", "100"]);
        }
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
        let child = cmd.spawn().expect("spawn tollgate");
        let client = Client::new(format!("http://{listen}"));
        Process {
            child,
            client,
            log,
            _dir: dir,
        }
    }

    /// True once /health answers; false if the process exited first.
    pub async fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = reqwest::Client::new();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(r) = http.get(self.client.url("/health")).send().await
                && r.status() == 200
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "tollgate did not become healthy: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::ops::Deref for Process {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
