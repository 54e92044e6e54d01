//! A Redis primary, its replica and three sentinels, each a real `redis-server` process
//! on a free port, with passwords (the sentinels' differ from the master's). Optionally
//! the replica hears its master through a proxy that delivers the replication stream a
//! fixed time late: a replication lag the test chooses.

use crate::redis_server::{free_port, redis_server_binary};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const MASTER_NAME: &str = "tollgate-master";
pub const MASTER_PASSWORD: &str = "master-pw";
pub const SENTINEL_PASSWORD: &str = "sentinel-pw";
/// Sentinel's `down-after-milliseconds`.
pub const DOWN_AFTER_MS: u64 = 1000;

/// One `redis-server` (or sentinel) process, killed when dropped.
pub struct Node {
    pub port: u16,
    password: &'static str,
    /// Reached over TLS only (`tls-port`, no plain port).
    tls: bool,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Node {
    /// `conf` gets the port and returns the rest of the configuration file.
    fn start(
        sentinel: bool,
        password: &'static str,
        tls: Option<&Tls>,
        conf: impl Fn(u16) -> String,
    ) -> Self {
        let mut node = Node {
            port: 0,
            password,
            tls: tls.is_some(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..20 {
            node.port = free_port();
            let path: PathBuf = node.dir.path().join("redis.conf");
            let listen = match tls {
                Some(tls) => format!(
                    "port 0\ntls-port {}\ntls-replication yes\ntls-auth-clients no\n\
                     tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {cert}",
                    node.port,
                    cert = tls.cert.display(),
                    key = tls.key.display()
                ),
                None => format!("port {}", node.port),
            };
            let text = format!(
                "{listen}\nbind 127.0.0.1\ndaemonize no\ndir {}\nrequirepass {password}\n{}\n",
                node.dir.path().display(),
                conf(node.port)
            );
            std::fs::write(&path, text).unwrap();
            let mut cmd = Command::new(redis_server_binary());
            cmd.arg(&path);
            if sentinel {
                cmd.arg("--sentinel");
            }
            let child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test.sh installs it)");
            node.child = Some(child);
            if node.wait_up() {
                return node;
            }
            node.kill();
        }
        panic!("could not start redis-server (sentinel: {sentinel})");
    }

    /// True once our own child answers on the port (not another test's server).
    fn wait_up(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            let info: Option<String> = self.try_cmd(&["INFO", "server"]);
            let pid = info.as_deref().and_then(|i| {
                i.lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .and_then(|p| p.trim().parse::<u32>().ok())
            });
            if pid.is_some() && pid == self.child.as_ref().map(|c| c.id()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn url(&self) -> String {
        match self.tls {
            // A throwaway self-signed certificate: no verification.
            true => format!(
                "rediss://:{}@127.0.0.1:{}/#insecure",
                self.password, self.port
            ),
            false => format!("redis://:{}@127.0.0.1:{}", self.password, self.port),
        }
    }

    pub fn try_cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> Option<T> {
        let mut conn = redis::Client::open(self.url())
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn).ok()
    }

    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        self.try_cmd(args)
            .unwrap_or_else(|| panic!("{args:?} failed on port {}", self.port))
    }

    /// SIGKILL: the process vanishes mid-stream, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A field of `INFO replication`.
    pub fn replication(&self, field: &str) -> Option<String> {
        let info: String = self.try_cmd(&["INFO", "replication"])?;
        let prefix = format!("{field}:");
        info.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.trim().to_string())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Primary, replica, three sentinels (quorum 2).
pub struct SentinelSet {
    pub primary: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    _proxy: Option<LagProxy>,
    _tls: Option<Tls>,
}

/// A throwaway self-signed certificate (`openssl`, which scripts/test.sh installs).
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tls {
    fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl is installed (scripts/test.sh installs it)");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        Tls {
            cert,
            key,
            _dir: dir,
        }
    }
}

fn data_conf(replica_of: Option<u16>) -> String {
    let mut conf = format!(
        "save \"\"\nappendonly no\nmasterauth {MASTER_PASSWORD}\nrepl-diskless-sync-delay 0\n"
    );
    if let Some(port) = replica_of {
        conf.push_str(&format!("replicaof 127.0.0.1 {port}\n"));
    }
    conf
}

impl SentinelSet {
    /// The replica replicates directly (a replication lag of well under a millisecond).
    pub async fn start() -> Self {
        Self::start_lagging(None).await
    }

    /// `lag`: the replica hears its master through a proxy that delivers the stream that
    /// late, and drops what it still holds when the master dies (as a master's unsent
    /// output buffer is lost with it).
    pub async fn start_lagging(lag: Option<Duration>) -> Self {
        Self::start_with(lag, None).await
    }

    /// Every server (data and sentinels) reachable over TLS only, replication too.
    pub async fn start_tls() -> Self {
        Self::start_with(None, Some(Tls::make())).await
    }

    async fn start_with(lag: Option<Duration>, tls: Option<Tls>) -> Self {
        let primary = Node::start(false, MASTER_PASSWORD, tls.as_ref(), |_| data_conf(None));
        let proxy = match lag {
            Some(lag) => Some(LagProxy::start(primary.port, lag).await),
            None => None,
        };
        let upstream = proxy.as_ref().map_or(primary.port, |p| p.port);
        let replica = Node::start(false, MASTER_PASSWORD, tls.as_ref(), |_| {
            data_conf(Some(upstream))
        });
        // With a proxy, the replica points at the proxy's port; sentinels "correct" a
        // replica pointing elsewhere after failover-timeout, which must not happen
        // during the test.
        let failover_timeout = if lag.is_some() { 60_000 } else { 3_000 };
        let master_port = primary.port;
        let sentinels = (0..3)
            .map(|_| {
                Node::start(true, SENTINEL_PASSWORD, tls.as_ref(), |_| {
                    format!(
                        "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                         sentinel auth-pass {MASTER_NAME} {MASTER_PASSWORD}\n\
                         sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                         sentinel failover-timeout {MASTER_NAME} {failover_timeout}\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n"
                    )
                })
            })
            .collect();
        let set = SentinelSet {
            primary,
            replica,
            sentinels,
            _proxy: proxy,
            _tls: tls,
        };
        set.wait_ready().await;
        set
    }

    /// The sentinels' URLs, as `--redis-url` takes them.
    pub fn urls(&self) -> String {
        self.sentinels
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Until the replica is in sync and every sentinel knows the replica and the other
    /// two sentinels (so that a failover can be voted on).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let synced = self.replica.replication("master_link_status").as_deref() == Some("up");
            let known = self.sentinels.iter().all(|s| {
                let fields: Option<Vec<String>> = s.try_cmd(&["SENTINEL", "master", MASTER_NAME]);
                let field = |name: &str| {
                    fields.as_ref().and_then(|f| {
                        f.iter()
                            .position(|x| x == name)
                            .and_then(|i| f.get(i + 1).cloned())
                    })
                };
                field("num-slaves").as_deref() == Some("1")
                    && field("num-other-sentinels").as_deref() == Some("2")
            });
            if synced && known {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sentinel set not ready (replica synced: {synced}, sentinels agree: {known})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The master's port as the first answering sentinel names it.
    pub fn named_master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let reply: Option<(String, String)> =
                s.try_cmd(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]);
            reply.and_then(|(_, port)| port.parse().ok())
        })
    }
}

/// A TCP proxy in front of the primary for the replica: bytes from the primary reach the
/// replica `lag` after they left it; bytes from the replica go straight through.
pub struct LagProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl LagProxy {
    async fn start(upstream: u16, lag: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                tokio::spawn(pipe(down, upstream, lag));
            }
        });
        LagProxy { port, task }
    }
}

impl Drop for LagProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(down: tokio::net::TcpStream, upstream: u16, lag: Duration) {
    let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = up.set_nodelay(true);
    let _ = down.set_nodelay(true);
    let (mut up_read, mut up_write) = up.into_split();
    let (mut down_read, mut down_write) = down.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut down_read, &mut up_write).await;
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let forward = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at + lag).await;
            if down_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match up_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((tokio::time::Instant::now(), buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    // The primary is gone: what it "had not sent yet" is lost with it.
    forward.abort();
    back.abort();
}
