//! `redis-server` processes of the test's (or bench's) own, on free ports, killed when
//! dropped.
//!
//! The port race: a free port is only free when asked; another test may start its own
//! server on it before ours binds. Ours then exits, and the other one answers on the
//! port. So a server counts as started only once the server answering on its port
//! reports our child's pid (`pid_answering`); otherwise it is started again on another
//! port. Clusters (`cluster`) and sentinels (`sentinel`) start their nodes the same way.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `redis-server`, or `$REDIS_SERVER`.
pub fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// Pid of the server answering at `url` (`INFO server`), if any answers.
pub fn pid_answering(url: &str) -> Option<u32> {
    let info: String = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .and_then(|mut c| redis::cmd("INFO").arg("server").query(&mut c))
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

/// Waits (up to 5 s) until `child` is the server answering at `url`; false if it exited
/// first (its port was taken) or never answered, and then it is killed.
pub fn owns_port(child: &mut Child, url: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if pid_answering(url) == Some(child.id()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// A `redis-server` of the test's own, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    binary: String,
    extra_args: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&redis_server_binary(), &[])
    }

    /// `binary` with `extra_args` after the harness's own (port, no persistence), e.g.
    /// `["--hash-max-listpack-entries", "64"]`.
    pub fn start_with(binary: &str, extra_args: &[String]) -> Self {
        let mut server = RedisServer {
            port: 0,
            binary: binary.to_string(),
            extra_args: extra_args.to_vec(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..20 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start {binary} (is it installed? scripts/test.sh installs it)");
    }

    /// Starts the process on `self.port`; false if it did not come up (port taken).
    fn spawn(&mut self) -> bool {
        let mut child = Command::new(&self.binary)
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
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (scripts/test.sh installs redis-server)",
                    self.binary
                )
            });
        if owns_port(&mut child, &self.url()) {
            self.child = Some(child);
            return true;
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's pid (None once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
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
