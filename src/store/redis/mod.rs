//! The shared store: configs and counters in Redis, every counter operation one Lua
//! script call (one round trip), time from Redis `TIME`.
//!
//! One concept per file: `keys` (names), `scripts` (the Lua and how it is called),
//! `clock` (Redis's clock from here), `decode` (replies), `config_plane` (configs),
//! `hot_path` (checks and usage reports), `ops` and `batching` (how they are coalesced
//! into one script call), `listener` (change notifications).

mod batching;
mod clock;
mod cluster;
mod config_plane;
mod config_sync;
mod decode;
mod health;
mod hot_path;
mod keys;
mod listener;
pub mod ops;
pub mod scripts;

pub use self::batching::MAX_BATCH;
pub use self::health::{EvictionRisk, evicting_message, eviction_risk};

pub use self::keys::Keys;

use self::batching::Batcher;
use self::clock::ClockOffset;
use self::cluster::{Conn, LazyCluster, Shards};
use self::decode::{corrupt, unavailable};
use self::scripts::{Lua, Scripts};
use super::{
    Amounts, CheckOutcome, ConfigChanges, LimitUsage, ReseedOutcome, Store, StoreError, UsageDelta,
    UsageOutcome, WriteError, Written,
};
use crate::limits::CompiledConfig;
use crate::log_throttle::LogThrottle;
use crate::model::ModelConfig;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManagerConfig;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// One URL; with `cluster`, seed nodes, comma-separated.
    pub url: String,
    /// Redis Cluster (`--redis-mode cluster`): see `cluster`.
    pub cluster: bool,
    pub key_prefix: String,
    /// Bound on one hot-path call (check, usage report, ping, single config ops).
    pub timeout: Duration,
    /// Bound on loading every config.
    pub bulk_timeout: Duration,
    /// Run on a Redis whose `maxmemory-policy` is `allkeys-*` (it may evict configs).
    pub allow_evicting: bool,
}

pub struct RedisStore {
    conn: Conn,
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
    listener: JoinHandle<()>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl RedisStore {
    /// Never fails because Redis is down: the connection is made lazily and re-made on
    /// demand, so tollgate starts (not ready) and recovers by itself.
    pub fn connect(options: RedisOptions) -> Result<Self, String> {
        let urls: Vec<&str> = options
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let clients = urls
            .iter()
            .map(|url| redis::Client::open(*url).map_err(|e| format!("invalid redis URL: {e}")))
            .collect::<Result<Vec<_>, String>>()?;
        let Some(client) = clients.first() else {
            return Err("no redis URL".into());
        };
        let conn = if options.cluster {
            let seeds: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
            Conn::Cluster(Arc::new(LazyCluster::new(
                &seeds,
                options.timeout,
                options.bulk_timeout,
            )?))
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(options.timeout.max(Duration::from_millis(500))))
                .set_response_timeout(Some(options.bulk_timeout))
                // One connection attempt per reconnect, no backoff: while Redis refuses
                // connections, checks fall back at once instead of each waiting out a
                // retry delay; the next call tries again.
                .set_number_of_retries(0);
            Conn::Single(
                client
                    .get_connection_manager_lazy(config)
                    .map_err(|e| format!("cannot set up redis connection: {e}"))?,
            )
        };
        let keys = Keys::new(&options.key_prefix, options.cluster);
        let changes = Arc::new(Notify::new());
        let listener = tokio::spawn(listener::listen_for_changes(
            clients,
            keys.channel.clone(),
            changes.clone(),
        ));
        let clock = Arc::new(ClockOffset::new());
        let batcher = Batcher::start(
            conn.clone(),
            Lua::new(scripts::BATCH),
            keys.usage_markers(),
            options.bulk_timeout,
            clock.clone(),
        );
        let shards = options
            .cluster
            .then(|| Shards::new(conn.clone(), clock.clone(), options.bulk_timeout));
        Ok(RedisStore {
            conn,
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
            listener,
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
        match tokio::time::timeout(limit, op).await {
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

    /// Each config's limits (`ARGV`), as precompiled in the snapshot.
    fn limit_args(cmd: &mut redis::Cmd, configs: &[&CompiledConfig]) {
        for c in configs {
            cmd.arg(&*c.lua_limits);
        }
    }
}

impl Store for RedisStore {
    async fn config_changes(&self, since: u64, limit: usize) -> Result<ConfigChanges, StoreError> {
        self.read_config_changes(since, limit).await
    }

    async fn scan_configs(&self, cursor: u64) -> Result<(u64, Vec<ModelConfig>), StoreError> {
        self.scan_config_page(cursor).await
    }

    async fn reseed(
        &self,
        found: Option<&str>,
        configs: Vec<ModelConfig>,
        min_version: u64,
    ) -> Result<ReseedOutcome, StoreError> {
        self.reseed_configs(found, configs, min_version).await
    }

    async fn get_config(&self, id: &str) -> Result<Option<ModelConfig>, StoreError> {
        self.read_config(id).await
    }

    async fn create_config(
        &self,
        config: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        self.write_new_config(config, epoch).await
    }

    async fn replace_config(
        &self,
        old: &ModelConfig,
        new: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        self.write_replaced_config(old, new, epoch).await
    }

    async fn delete_config(
        &self,
        old: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        self.write_deleted_config(old, epoch).await
    }

    async fn check(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        dry_run: bool,
    ) -> Result<CheckOutcome, StoreError> {
        self.run_check(configs, amounts, dry_run).await
    }

    async fn record_usage(
        &self,
        configs: &[&CompiledConfig],
        delta: UsageDelta,
        request_id: Option<&str>,
    ) -> Result<UsageOutcome, StoreError> {
        self.run_usage(configs, delta, request_id).await
    }

    async fn read_usage(
        &self,
        configs: &[&CompiledConfig],
    ) -> Result<(i64, Vec<Vec<LimitUsage>>), StoreError> {
        self.run_read_usage(configs).await
    }

    /// Reachable, every script present in the script cache (loaded if not), no
    /// `allkeys-*` eviction (unless allowed), and accepting writes.
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let hashes: Vec<&str> = self.scripts.all().iter().map(|s| s.get_hash()).collect();
        let present: Vec<bool> = self
            .bounded(
                self.timeout,
                redis::cmd("SCRIPT")
                    .arg("EXISTS")
                    .arg(&hashes)
                    .query_async(&mut conn),
            )
            .await?;
        for (script, loaded) in self.scripts.all().into_iter().zip(present) {
            if !loaded {
                self.bounded(self.timeout, script.prepare_invoke().load_async(&mut conn))
                    .await?;
            }
        }
        let writable = async {
            self.check_eviction_policy().await?;
            self.probe_writes().await
        }
        .await;
        metrics::gauge!(crate::metrics::STORE_WRITABLE).set(if writable.is_ok() {
            1.0
        } else {
            0.0
        });
        if let Err(e) = &writable
            && let Some(more) = self
                .writes_refused
                .allow(chrono::Utc::now().timestamp_millis())
        {
            tracing::error!(error = %e, also_since_last_line = more, "Redis cannot keep tollgate's writes; not ready");
        }
        writable
    }

    async fn clock(&self) -> Result<DateTime<Utc>, StoreError> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = self
            .bounded(self.timeout, redis::cmd("TIME").query_async(&mut conn))
            .await?;
        DateTime::from_timestamp(secs, (micros * 1000) as u32)
            .ok_or_else(|| corrupt(format_args!("TIME answered {secs} s {micros} µs")))
    }

    fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }
}
