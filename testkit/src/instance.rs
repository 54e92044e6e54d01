//! One tollgate under test: served from the test process (`Tollgate`, on the memory store
//! or its own Redis), or as its own OS process (`Process`, the built binary).

use crate::client::Client;
use crate::redis_server::{RedisServer, free_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

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

/// The `tollgate` binary cargo built for the running tests or benches:
/// `$CARGO_BIN_EXE_tollgate` (cargo sets it when it runs them; it builds a package's
/// binaries for its integration tests and benches), else the `tollgate` beside the
/// `deps/` directory the test binary runs from.
pub fn tollgate_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_tollgate") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let beside = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("tollgate"))
        .filter(|p| p.exists());
    beside.unwrap_or_else(|| {
        panic!(
            "no tollgate binary near {}: run through cargo test / cargo bench",
            exe.display()
        )
    })
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
    /// Configs propagate within 100 ms unless `args` set `--config-poll-ms`.
    pub async fn spawn_wrapped(
        wrapper: Option<&[&str]>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let mut all = Vec::with_capacity(args.len() + 2);
        if !args.contains(&"--config-poll-ms") {
            all.extend(["--config-poll-ms", "100"]);
        }
        all.extend_from_slice(args);
        let binary = tollgate_binary();
        Self::start(&binary, wrapper, &all, envs, Duration::from_secs(20)).await
    }

    /// `binary` with `args` after `--listen`, nothing else added (a bench measures its
    /// defaults), waiting up to `patience` for `/health` (it answers once the first
    /// config load is done: long with a million configs).
    pub async fn launch(
        binary: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        patience: Duration,
    ) -> Self {
        Self::start(binary, None, args, envs, patience).await
    }

    /// Retries on another port when the chosen one was taken meanwhile.
    async fn start(
        binary: &Path,
        wrapper: Option<&[&str]>,
        args: &[&str],
        envs: &[(&str, &str)],
        patience: Duration,
    ) -> Self {
        for _ in 0..5 {
            let mut p = Self::spawn_once(binary, wrapper, args, envs);
            if p.wait_healthy_within(patience).await {
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

    fn spawn_once(
        binary: &Path,
        wrapper: Option<&[&str]>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tollgate.log");
        let listen = format!("127.0.0.1:{}", free_port());
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
        cmd.args(["--listen", &listen])
            .args(args)
            .envs(envs.iter().copied())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let client = Client::new(format!("http://{listen}"));
        Process {
            child,
            client,
            log,
            _dir: dir,
        }
    }

    /// The process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        let at = self.client.base.trim_start_matches("http://");
        at.parse().expect("listening on an IP address")
    }

    /// True once /health answers; false if the process exited first.
    pub async fn wait_healthy(&mut self) -> bool {
        self.wait_healthy_within(Duration::from_secs(20)).await
    }

    async fn wait_healthy_within(&mut self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
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
