//! The shared store: configs and counters in Redis, every counter operation one Lua
//! script call (one round trip), time from Redis `TIME`.
//!
//! One concept per file. The store's four concerns: `hot_path` (`store::Counters`:
//! checks and usage reports), `config_plane` (`store::ConfigWrites`), `config_sync`
//! (`store::ConfigLog`: change log, full load, re-seed) and `health` (`store::Health`:
//! readiness, eviction policy, write probe, `TIME`). Beneath them: `keys` (names),
//! `scripts` (the Lua and how it is called), `packed_limits` (limits as the scripts read
//! them), `clock` (Redis's clock from here), `decode` (replies), `ops` and `batching`
//! (how checks and reports are coalesced into one script call), `listener` (change
//! notifications), `connection` (the master in use, swappable), `sentinel` (finding and
//! following it), `replication` (`WAIT` for replicas after budget-changing writes),
//! `options` (topology), and `cluster` (Redis Cluster: calls split by slot).

mod batch_reply;
mod batching;
mod clock;
mod cluster;
mod config_plane;
mod config_sync;
mod connection;
mod decode;
mod health;
mod hot_path;
mod keys;
mod listener;
pub mod ops;
mod options;
pub mod packed_limits;
mod replication;
pub mod scripts;
mod sentinel;

pub use self::connection::MasterConnection;

pub use self::batching::MAX_BATCH;
pub use self::health::{EvictionRisk, evicting_message, eviction_risk};

pub use self::keys::Keys;
pub use self::options::{RedisOptions, Topology};

use self::batching::Batcher;
use self::clock::ClockOffset;
use self::cluster::{LazyCluster, Shards};
use self::connection::Master;
use self::decode::unavailable;
use self::scripts::{Lua, Scripts};
use self::sentinel::Sentinels;
use super::StoreError;
use crate::limits::CompiledConfig;
use crate::log_throttle::LogThrottle;
use redis::aio::ConnectionManagerConfig;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub struct RedisStore {
    master: Arc<Master>,
    clock: Arc<ClockOffset>,
    batcher: Batcher,
    /// Redis Cluster: checks and usage reports split by slot (instead of `batcher`).
    shards: Option<Shards>,
    keys: Keys,
    scripts: Scripts,
    timeout: Duration,
    bulk_timeout: Duration,
    allow_evicting: bool,
    /// `volatile-*` is worth one warning, not one per readiness probe.
    warned_volatile: AtomicBool,
    writes_refused: LogThrottle,
    changes: Arc<Notify>,
    /// The change listener, and in sentinel mode the master's followers.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RedisStore {
    /// Never fails because Redis is down: the connection is made lazily and re-made on
    /// demand, so tollgate starts (not ready) and recovers by itself. In sentinel mode the
    /// master is looked for in the background (`wait_for_master`).
    pub fn connect(options: RedisOptions) -> Result<Self, String> {
        let urls: Vec<String> = options
            .url
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err("no redis URL".into());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(options.bulk_timeout))
            // One connection attempt per reconnect, no backoff: while Redis refuses
            // connections, checks fall back at once instead of each waiting out a retry
            // delay; the next call tries again.
            .set_number_of_retries(0);
        let master = Arc::new(Master::new(options.wait_replicas, options.timeout));
        let mut tasks = Vec::new();
        let mut cluster_seeds = Vec::new();
        match &options.topology {
            Topology::Standalone => {
                let client = redis::Client::open(options.url.as_str())
                    .map_err(|e| format!("invalid redis URL: {e}"))?;
                let conn = client
                    .get_connection_manager_lazy(config)
                    .map_err(|e| format!("cannot set up redis connection: {e}"))?;
                // host:port, never the URL: it may hold a password.
                let addr = client.get_connection_info().addr().to_string();
                master.install(addr, client, conn);
            }
            Topology::Sentinel {
                master: name,
                master_username,
                master_password,
            } => {
                let sentinels = Arc::new(Sentinels::parse(
                    &urls,
                    name,
                    master_username.clone(),
                    master_password.clone(),
                    options.timeout.max(Duration::from_millis(500)),
                )?);
                tasks.push(tokio::spawn(sentinel::follow(
                    master.clone(),
                    sentinels.clone(),
                    config,
                )));
                tasks.push(tokio::spawn(sentinel::watch_switches(
                    master.clone(),
                    sentinels,
                )));
            }
            Topology::Cluster { .. } => {
                if options.wait_replicas > 0 {
                    return Err("--redis-wait-replicas is not supported on Redis Cluster".into());
                }
                let cluster = LazyCluster::new(&urls, options.timeout, options.bulk_timeout)?;
                cluster_seeds = urls
                    .iter()
                    .map(|url| {
                        redis::Client::open(url.as_str())
                            .map_err(|e| format!("invalid redis URL: {e}"))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let addr = cluster_seeds
                    .iter()
                    .map(|c| c.get_connection_info().addr().to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                master.install_cluster(addr, cluster_seeds[0].clone(), Arc::new(cluster));
            }
        }
        let (cluster, counter_slots) = match options.topology {
            Topology::Cluster { counter_slots } => (true, counter_slots),
            _ => (false, 0),
        };
        let keys = Keys::new(&options.key_prefix, cluster).with_counter_slots(counter_slots);
        if cluster {
            tasks.push(tokio::spawn(cluster::migrate_counters(
                master.clone(),
                keys.clone(),
                options.bulk_timeout,
            )));
        }
        let changes = Arc::new(Notify::new());
        tasks.push(tokio::spawn(listener::listen_for_changes(
            master.clone(),
            cluster_seeds,
            keys.channel.clone(),
            changes.clone(),
        )));
        let clock = Arc::new(ClockOffset::new());
        // Takes the current master's connection for each call: after a failover,
        // batches go to the new master.
        let batcher = Batcher::start(
            master.clone(),
            Lua::new(scripts::BATCH),
            keys.usage_markers(),
            options.bulk_timeout,
            clock.clone(),
        );
        let shards =
            cluster.then(|| Shards::new(master.clone(), clock.clone(), options.bulk_timeout));
        Ok(RedisStore {
            master,
            clock,
            batcher,
            shards,
            keys,
            scripts: Scripts::new(),
            timeout: options.timeout,
            bulk_timeout: options.bulk_timeout,
            allow_evicting: options.allow_evicting,
            warned_volatile: AtomicBool::new(false),
            writes_refused: LogThrottle::new(10_000),
            changes,
            tasks,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn bounded<T>(
        &self,
        limit: Duration,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let result = tokio::time::timeout(limit, op).await;
        // A failed call is the first sign of a failover: the follower looks again.
        match &result {
            Ok(Err(e)) => self.master.observe(e),
            Err(_) => self.master.suspect(),
            Ok(Ok(_)) => {}
        }
        match result {
            // redis-rs's own response timeout (the bulk timeout) may fire first.
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout(limit)),
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(StoreError::Timeout(limit)),
        }
    }

    /// One counters key per config (`KEYS`), in order.
    fn counter_keys(&self, cmd: &mut redis::Cmd, configs: &[&CompiledConfig]) {
        for c in configs {
            cmd.arg(self.keys.counters(&c.config.id));
        }
    }

    /// Each config's limits (`ARGV`), packed once per compiled config.
    fn limit_args(cmd: &mut redis::Cmd, configs: &[&CompiledConfig]) {
        for c in configs {
            cmd.arg(&**packed_limits::packed_limits(c));
        }
    }
}
