//! A Redis Cluster of the test's own: 3 masters and (by default) 3 replicas (`redis-server
//! --cluster-enabled yes` on free ports, each checked to be ours as in `redis_server`,
//! joined by `redis-cli --cluster create`), with a short node timeout so a killed
//! master's replica takes over in about two seconds.

use crate::redis_server::{free_port, owns_port, redis_server_binary};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub nodes: HashMap<u16, Child>,
    /// The nodes' files.
    _dir: tempfile::TempDir,
}

fn conn(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_millis(300))
}

pub fn cmd<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn(port)?)
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with_replicas(1)
    }

    /// 3 masters, each with `replicas` replicas.
    pub fn start_with_replicas(replicas: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = HashMap::new();
        while nodes.len() < 3 * (1 + replicas) {
            let port = free_port();
            if nodes.contains_key(&port) {
                continue;
            }
            let mut child = Command::new(redis_server_binary())
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                // Other shards keep serving while one has no master.
                .args(["--cluster-require-full-coverage", "no"])
                // A replica takes over however recently it synced.
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--save", "", "--appendonly", "no"])
                // A replica's first sync starts at once, not 5 s later.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            // Taken meanwhile by another test's server: try another port.
            if owns_port(&mut child, &format!("redis://127.0.0.1:{port}")) {
                nodes.insert(port, child);
            }
        }
        let cluster = Cluster { nodes, _dir: dir };
        for &port in cluster.nodes.keys() {
            assert!(
                wait(Duration::from_secs(5), || cmd::<String>(port, &["PING"])
                    .is_ok()),
                "node {port} came up"
            );
        }
        let addrs: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok(replicas > 0);
        if replicas > 0 {
            cluster.wait_streaming(replicas);
        }
        cluster
    }

    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.nodes.keys().copied().collect();
        ports.sort();
        ports
    }

    /// Seed URLs for --redis-url (all nodes, comma-separated).
    pub fn url(&self) -> String {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Until every live node says `cluster_state:ok` and all agree on 3 masters serving
    /// every slot.
    pub fn wait_ok(&self, replicated: bool) {
        let ok = wait(Duration::from_secs(20), || {
            self.nodes.keys().all(|&p| {
                cmd::<String>(p, &["CLUSTER", "INFO"]).is_ok_and(|i| {
                    i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384")
                })
            })
        });
        assert!(ok, "cluster never reached cluster_state:ok");
        let synced = !replicated
            || wait(Duration::from_secs(20), || {
                self.nodes.keys().all(|&p| {
                    cmd::<String>(p, &["INFO", "replication"]).is_ok_and(|i| {
                        i.contains("connected_slaves:1") || i.contains("master_link_status:up")
                    })
                })
            });
        assert!(synced, "every master has its replica in sync");
    }

    /// Until a write to each master is acknowledged by its `replicas` replicas (`WAIT`).
    /// A replica's link is up once its first sync is loaded, but its master streams
    /// writes to it only after the replica's first `REPLCONF ACK` (up to a second
    /// later): a master killed in between loses everything written since the sync, not
    /// a replication lag's worth.
    fn wait_streaming(&self, replicas: usize) {
        for master in self.masters() {
            let key = self.key_served_by(master);
            let acked = wait(Duration::from_secs(20), || {
                let _ = cmd::<()>(master, &["SET", &key, "1"]);
                cmd::<i64>(master, &["WAIT", &replicas.to_string(), "1000"])
                    .is_ok_and(|n| n >= replicas as i64)
            });
            let _ = cmd::<()>(master, &["DEL", &key]);
            assert!(acked, "master {master}'s replicas acknowledge its writes");
        }
    }

    /// A key in one of the slots master `port` serves.
    fn key_served_by(&self, port: u16) -> String {
        (0..)
            .map(|n| format!("tollgate-test:probe:{n}"))
            .find(|key| {
                cmd::<i64>(port, &["CLUSTER", "KEYSLOT", key])
                    .is_ok_and(|slot| self.master_of_as_seen_by(port, slot as u16) == Some(port))
            })
            .expect("every master serves slots")
    }

    /// Port of the master serving `slot`, as the nodes see it (the first that disagrees
    /// with another makes it "unsettled": 0).
    pub fn master_of(&self, slot: u16) -> u16 {
        let views: Vec<u16> = self
            .nodes
            .keys()
            .filter_map(|&p| self.master_of_as_seen_by(p, slot))
            .collect();
        match views.first() {
            Some(&m) if views.iter().all(|&v| v == m) => m,
            _ => 0,
        }
    }

    fn master_of_as_seen_by(&self, p: u16, slot: u16) -> Option<u16> {
        let slots = cmd::<Vec<redis::Value>>(p, &["CLUSTER", "SLOTS"]).ok()?;
        for range in slots {
            let redis::Value::Array(items) = range else {
                continue;
            };
            let num = |v: &redis::Value| match v {
                redis::Value::Int(i) => *i,
                _ => -1,
            };
            let (from, to) = (num(&items[0]), num(&items[1]));
            if (from..=to).contains(&(slot as i64)) {
                let redis::Value::Array(master) = &items[2] else {
                    continue;
                };
                return Some(num(&master[1]) as u16);
            }
        }
        None
    }

    pub fn node_id(&self, port: u16) -> String {
        cmd(port, &["CLUSTER", "MYID"]).unwrap()
    }

    /// Master ports.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<u16> = self
            .nodes
            .keys()
            .copied()
            .filter(|&p| {
                cmd::<Vec<redis::Value>>(p, &["ROLE"])
                    .is_ok_and(|r| r.first() == Some(&redis::Value::BulkString(b"master".to_vec())))
            })
            .collect();
        masters.sort();
        masters
    }

    /// SIGKILL a node (a crashed master: its replica takes over).
    pub fn kill(&mut self, port: u16) {
        if let Some(mut child) = self.nodes.remove(&port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Moves `slot` from master `from` to master `to` with its keys, as
    /// `redis-cli --cluster reshard` does: IMPORTING, MIGRATING, MIGRATE, then NODE.
    pub fn migrate_slot(&self, slot: u16, from: u16, to: u16) {
        self.migrate_slot_paced(slot, from, to, 100, Duration::ZERO);
    }

    /// `migrate_slot`, `per_call` keys per MIGRATE with `pause` between calls, so that
    /// clients meet the slot half moved (ASK, TRYAGAIN) for a while.
    pub fn migrate_slot_paced(
        &self,
        slot: u16,
        from: u16,
        to: u16,
        per_call: usize,
        pause: Duration,
    ) {
        let (s, from_id, to_id) = (slot.to_string(), self.node_id(from), self.node_id(to));
        let _: () = cmd(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]).unwrap();
        let _: () = cmd(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]).unwrap();
        let count = per_call.to_string();
        loop {
            let keys: Vec<String> = cmd(from, &["CLUSTER", "GETKEYSINSLOT", &s, &count]).unwrap();
            if keys.is_empty() {
                break;
            }
            std::thread::sleep(pause);
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys);
            let _: () = migrate.query(&mut conn(from).unwrap()).unwrap();
        }
        // The target first, then the source, then the rest (as redis-cli does).
        let mut order = vec![to, from];
        order.extend(self.nodes.keys().filter(|&&p| p != to && p != from));
        for p in order {
            let _: redis::RedisResult<()> = cmd(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        }
        let agreed = wait(Duration::from_secs(10), || self.master_of(slot) == to);
        assert!(agreed, "every node learnt that slot {slot} moved");
    }

    /// The lowest slot master `port` serves, as it says.
    pub fn lowest_slot(&self, port: u16) -> Option<u16> {
        let slots = cmd::<Vec<redis::Value>>(port, &["CLUSTER", "SLOTS"]).ok()?;
        let num = |v: &redis::Value| match v {
            redis::Value::Int(i) => *i,
            _ => -1,
        };
        slots
            .iter()
            .filter_map(|range| match range {
                redis::Value::Array(items) => match &items[2] {
                    redis::Value::Array(m) if num(&m[1]) == port as i64 => Some(num(&items[0])),
                    _ => None,
                },
                _ => None,
            })
            .min()
            .map(|s| s as u16)
    }

    /// `redis-cli --cluster reshard`: moves the `slots` lowest slots of master `from` to
    /// master `to`, keys included (MIGRATE in pipelines of 10, never replacing a key the
    /// target already has). Its output, and whether it succeeded.
    pub fn reshard(&self, from: u16, to: u16, slots: usize) -> (bool, String) {
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &self.node_id(from)])
            .args(["--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Until every node agrees on who serves `slot` (after a move or a failover).
    pub fn wait_settled(&self, slot: u16) -> u16 {
        let mut master = 0;
        let settled = wait(Duration::from_secs(15), || {
            master = self.master_of(slot);
            master != 0
        });
        assert!(settled, "the nodes never agreed on slot {slot}'s master");
        master
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in self.nodes.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait(within: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
