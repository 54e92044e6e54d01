//! The shared store: configs and counters in Redis, every counter operation one Lua
//! script call (one round trip), time from Redis `TIME`.
//!
//! One concept per file: `keys` (names), `scripts` (the Lua and how it is called),
//! `clock` (Redis's clock from here), `decode` (replies), `config_plane` (configs),
//! `hot_path` (checks and usage reports), `ops` and `batching` (how they are coalesced
//! into one script call), `listener` (change notifications).

mod batching;
mod clock;
mod config_plane;
mod decode;
mod hot_path;
mod keys;
mod listener;
pub mod ops;
pub mod scripts;

pub use self::batching::MAX_BATCH;

pub use self::keys::Keys;

use self::batching::Batcher;
use self::clock::ClockOffset;
use self::decode::{corrupt, unavailable, write_result};
use self::scripts::{Lua, Scripts, invoke};
use super::{
    Amounts, CheckOutcome, LimitUsage, Store, StoreError, UsageDelta, UsageOutcome, WriteError,
};
use crate::limits::CompiledConfig;
use crate::model::ModelConfig;
use chrono::{DateTime, Utc};
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: String,
    pub key_prefix: String,
    /// Bound on one hot-path call (check, usage report, ping, single config ops).
    pub timeout: Duration,
    /// Bound on loading every config.
    pub bulk_timeout: Duration,
}

pub struct RedisStore {
    conn: ConnectionManager,
    clock: Arc<ClockOffset>,
    batcher: Batcher,
    keys: Keys,
    scripts: Scripts,
    timeout: Duration,
    bulk_timeout: Duration,
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
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| format!("invalid redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(options.bulk_timeout))
            // One connection attempt per reconnect, no backoff: while Redis refuses
            // connections, checks fall back at once instead of each waiting out a retry
            // delay; the next call tries again.
            .set_number_of_retries(0);
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| format!("cannot set up redis connection: {e}"))?;
        let keys = Keys::new(&options.key_prefix);
        let changes = Arc::new(Notify::new());
        let listener = tokio::spawn(listener::listen_for_changes(
            client,
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
        Ok(RedisStore {
            conn,
            clock,
            batcher,
            keys,
            scripts: Scripts::new(),
            timeout: options.timeout,
            bulk_timeout: options.bulk_timeout,
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

    /// Runs a config script so that a write answered as failed never happens later:
    /// Redis queues commands while it is paused or stalled and runs them when it
    /// resumes, long after a timeout. So the script gets a deadline on Redis's own clock
    /// (`TIME` now plus the store timeout) past which it changes nothing, and tollgate
    /// waits (up to the bulk timeout) to hear which way it went.
    async fn write_script(
        &self,
        lua: &Lua,
        keys: &[&str],
        args: impl Fn(&mut redis::Cmd),
    ) -> Result<u64, WriteError> {
        let mut conn = self.conn.clone();
        let (secs, micros): (u64, u64) = self
            .bounded(self.timeout, redis::cmd("TIME").query_async(&mut conn))
            .await?;
        let deadline = secs * 1000 + micros / 1000 + self.timeout.as_millis() as u64;
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(keys.len()).arg(keys).arg(deadline);
            args(cmd);
        };
        let reply: Vec<Value> = self
            .bounded(self.bulk_timeout, invoke(&mut conn, lua, fill))
            .await?;
        write_result(reply, self.timeout)
    }
}

impl Store for RedisStore {
    async fn load_configs(&self) -> Result<(u64, Vec<ModelConfig>), StoreError> {
        self.load_all_configs().await
    }

    async fn config_version(&self) -> Result<u64, StoreError> {
        self.read_config_version().await
    }

    async fn get_config(&self, id: &str) -> Result<Option<ModelConfig>, StoreError> {
        self.read_config(id).await
    }

    async fn create_config(&self, config: &ModelConfig) -> Result<u64, WriteError> {
        self.write_new_config(config).await
    }

    async fn replace_config(
        &self,
        old: &ModelConfig,
        new: &ModelConfig,
    ) -> Result<u64, WriteError> {
        self.write_replaced_config(old, new).await
    }

    async fn delete_config(&self, old: &ModelConfig) -> Result<u64, WriteError> {
        self.write_deleted_config(old).await
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

    /// Reachable, and every script present in the script cache (loaded if not).
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
        Ok(())
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
