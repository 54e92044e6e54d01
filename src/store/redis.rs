//! The shared store: configs and counters in Redis, every counter operation one Lua
//! script call (one round trip), time from Redis `TIME`.

use super::{
    Amounts, CheckOutcome, LimitOutcome, LimitUsage, Store, StoreError, USAGE_ID_TTL, UsageDelta,
    UsageOutcome, WriteError, removed_budget_fields,
};
use crate::limits::CompiledConfig;
use crate::model::ModelConfig;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ErrorKind, FromRedisValue, Script, ServerErrorKind, Value};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A script from `lua/`, with the shared prelude it builds on prepended.
macro_rules! lua {
    ($prelude:literal, $name:literal) => {
        concat!(
            include_str!(concat!("../../lua/", $prelude)),
            "\n",
            include_str!(concat!("../../lua/", $name))
        )
    };
}

/// Source of every script, for tests and benchmarks that call them directly.
pub mod scripts {
    pub const CHECK: &str = lua!("lib.lua", "check.lua");
    pub const USAGE: &str = lua!("lib.lua", "usage.lua");
    pub const READ_USAGE: &str = lua!("lib.lua", "read_usage.lua");
    pub const LIB: &str = include_str!("../../lua/lib.lua");
    pub const CONFIG_CREATE: &str = lua!("config_lib.lua", "config_create.lua");
    pub const CONFIG_UPDATE: &str = lua!("config_lib.lua", "config_update.lua");
    pub const CONFIG_DELETE: &str = lua!("config_lib.lua", "config_delete.lua");
}

/// A script and its source, so it can be sent whole when Redis has lost it.
struct Lua {
    source: &'static str,
    script: Script,
}

impl Lua {
    fn new(source: &'static str) -> Self {
        Lua {
            source,
            script: Script::new(source),
        }
    }
}

struct Scripts {
    check: Lua,
    usage: Lua,
    read_usage: Lua,
    create: Lua,
    update: Lua,
    delete: Lua,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            check: Lua::new(scripts::CHECK),
            usage: Lua::new(scripts::USAGE),
            read_usage: Lua::new(scripts::READ_USAGE),
            create: Lua::new(scripts::CONFIG_CREATE),
            update: Lua::new(scripts::CONFIG_UPDATE),
            delete: Lua::new(scripts::CONFIG_DELETE),
        }
    }

    fn all(&self) -> [&Script; 6] {
        [
            &self.check.script,
            &self.usage.script,
            &self.read_usage.script,
            &self.create.script,
            &self.update.script,
            &self.delete.script,
        ]
    }
}

/// Runs `lua` with the keys and arguments that `fill` writes after the script (first
/// the number of keys). EVALSHA first; if Redis lacks the script (restarted, or
/// `SCRIPT FLUSH`), EVAL of the source, which runs and caches it in one step. (Loading
/// and then retrying the EVALSHA, as `redis::Script` does, fails when a flush falls in
/// between.) `fill` writes straight into the command: no per-argument buffers.
async fn invoke<T: FromRedisValue>(
    conn: &mut ConnectionManager,
    lua: &Lua,
    fill: impl Fn(&mut redis::Cmd),
) -> redis::RedisResult<T> {
    let command = |verb: &str, script: &str| {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script);
        fill(&mut cmd);
        cmd
    };
    match command("EVALSHA", lua.script.get_hash())
        .query_async(conn)
        .await
    {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            command("EVAL", lua.source).query_async(conn).await
        }
        other => other,
    }
}

/// Redis's clock minus ours, estimated from the `now` that every hot-path script returns,
/// so a check can carry a deadline on Redis's clock without an extra round trip.
///
/// A sample (Redis's time when the script ran, minus our time when we sent it) can only
/// over-estimate the offset, by the request's delay; the smallest recent sample is the
/// tightest estimate that never makes a timely call look late. It is re-seeded every
/// 10 s to follow clock drift, and from any call that came back past its deadline, in
/// case our clock stepped back.
#[derive(Debug)]
struct ClockOffset {
    offset_ms: AtomicI64,
    /// Local ms when the estimate was last re-seeded; 0 = no estimate yet.
    seeded_at_ms: AtomicI64,
}

const OFFSET_RESEED_MS: i64 = 10_000;

impl ClockOffset {
    fn new() -> Self {
        ClockOffset {
            offset_ms: AtomicI64::new(0),
            seeded_at_ms: AtomicI64::new(0),
        }
    }

    /// Deadline on Redis's clock for a call sent at local `sent_ms`; 0 (none) until
    /// there is an estimate.
    fn deadline(&self, sent_ms: i64, timeout: Duration) -> i64 {
        if self.seeded_at_ms.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        sent_ms + self.offset_ms.load(Ordering::Relaxed) + timeout.as_millis() as i64
    }

    fn observe(&self, sent_ms: i64, redis_now_ms: i64, late: bool) {
        let sample = redis_now_ms - sent_ms;
        let seeded = self.seeded_at_ms.load(Ordering::Relaxed);
        if late || seeded == 0 || sent_ms - seeded > OFFSET_RESEED_MS {
            self.offset_ms.store(sample, Ordering::Relaxed);
            self.seeded_at_ms.store(sent_ms.max(1), Ordering::Relaxed);
        } else {
            self.offset_ms.fetch_min(sample, Ordering::Relaxed);
        }
    }
}

fn local_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Names of everything tollgate keeps in Redis, under the deployment's prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    pub configs: String,
    pub identities: String,
    pub version: String,
    pub channel: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
            configs: format!("{prefix}configs"),
            identities: format!("{prefix}config_identities"),
            version: format!("{prefix}config_version"),
            channel: format!("{prefix}config_changes"),
        }
    }

    pub fn counters(&self, config_id: &str) -> String {
        format!("{}c:{config_id}", self.prefix)
    }

    /// KEYS of the update and delete scripts, around one config's counters key.
    fn for_config_write<'a>(&'a self, counters: &'a str) -> [&'a str; 4] {
        [&self.configs, &self.identities, &self.version, counters]
    }

    pub fn usage_id(&self, request_id: &str) -> String {
        format!("{}u:{request_id}", self.prefix)
    }
}

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
    clock: ClockOffset,
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

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("expected an integer")),
        other => Err(corrupt(format_args!("expected an integer, got {other:?}"))),
    }
}

fn text(v: &Value) -> Result<String, StoreError> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(corrupt(format_args!("expected a string, got {other:?}"))),
    }
}

/// Decodes the `{1, version} | {0, reason, id?}` answer of the config scripts.
fn write_result(reply: Vec<Value>, timeout: Duration) -> Result<u64, WriteError> {
    match reply.first().map(int).transpose()? {
        Some(1) => Ok(int(reply.get(1).ok_or_else(|| corrupt("missing version"))?)? as u64),
        Some(0) => match reply.get(1).map(text).transpose()?.as_deref() {
            Some("missing") => Err(WriteError::NotFound),
            Some("stale") => Err(WriteError::Stale),
            Some("expired") => Err(StoreError::Timeout(timeout).into()),
            Some("conflict") => Err(WriteError::Conflict(
                reply.get(2).map(text).transpose()?.unwrap_or_default(),
            )),
            other => Err(corrupt(format_args!("unknown write answer {other:?}")).into()),
        },
        _ => Err(corrupt("malformed write answer").into()),
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
        let listener = tokio::spawn(listen_for_changes(
            client,
            keys.channel.clone(),
            changes.clone(),
        ));
        Ok(RedisStore {
            conn,
            clock: ClockOffset::new(),
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

    /// Learns the clock offset from a hot-path reply (`{status, now_ms, …}`); a status of
    /// -1 means Redis ran the script past its deadline and changed nothing.
    fn observe_clock(&self, sent_ms: i64, reply: &[i64]) -> Result<(), StoreError> {
        let (Some(&status), Some(&now)) = (reply.first(), reply.get(1)) else {
            return Err(corrupt("script answered without its status and time"));
        };
        self.clock.observe(sent_ms, now, status == -1);
        if status == -1 {
            return Err(StoreError::Timeout(self.timeout));
        }
        Ok(())
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
            cmd.arg(c.lua_limits.as_slice());
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

/// Pokes `changes` on every config change announced on the channel, and after every
/// (re)subscription, since changes may have been missed while disconnected. The
/// periodic version poll covers the rest.
async fn listen_for_changes(client: redis::Client, channel: String, changes: Arc<Notify>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    changes.notify_one();
                    let mut messages = pubsub.on_message();
                    while messages.next().await.is_some() {
                        changes.notify_one();
                    }
                    tracing::warn!("config change subscription lost; resubscribing");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to config changes"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot connect for config changes"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Store for RedisStore {
    async fn load_configs(&self) -> Result<(u64, Vec<ModelConfig>), StoreError> {
        let mut conn = self.conn.clone();
        let (version, raw): (Option<u64>, Vec<String>) = self
            .bounded(
                self.bulk_timeout,
                redis::pipe()
                    .atomic()
                    .get(&self.keys.version)
                    .hvals(&self.keys.configs)
                    .query_async(&mut conn),
            )
            .await?;
        let configs = raw
            .iter()
            .filter_map(|json| match serde_json::from_str::<ModelConfig>(json) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "skipping unreadable config in redis");
                    None
                }
            })
            .collect();
        Ok((version.unwrap_or(0), configs))
    }

    async fn config_version(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        // Only the sync loop asks: it may wait longer than a check, so the first call can
        // also establish the connection (a TLS handshake can take longer than a check may).
        let v: Option<u64> = self
            .bounded(self.bulk_timeout, conn.get(&self.keys.version))
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn get_config(&self, id: &str) -> Result<Option<ModelConfig>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = self
            .bounded(self.timeout, conn.hget(&self.keys.configs, id))
            .await?;
        raw.map(|json| serde_json::from_str(&json).map_err(corrupt))
            .transpose()
    }

    async fn create_config(&self, config: &ModelConfig) -> Result<u64, WriteError> {
        let json = serde_json::to_string(config).map_err(corrupt)?;
        let identity = config.identity();
        let keys = [
            self.keys.configs.as_str(),
            &self.keys.identities,
            &self.keys.version,
        ];
        self.write_script(&self.scripts.create, &keys, |cmd| {
            cmd.arg(&config.id)
                .arg(&identity)
                .arg(&json)
                .arg(&self.keys.channel);
        })
        .await
    }

    async fn replace_config(
        &self,
        old: &ModelConfig,
        new: &ModelConfig,
    ) -> Result<u64, WriteError> {
        let json = serde_json::to_string(new).map_err(corrupt)?;
        let (old_identity, new_identity) = (old.identity(), new.identity());
        let removed = removed_budget_fields(old, new);
        let lifetime_ms = CompiledConfig::counter_lifetime_of(new).map_err(corrupt)?;
        let counters = self.keys.counters(&old.id);
        let keys = self.keys.for_config_write(&counters);
        self.write_script(&self.scripts.update, &keys, |cmd| {
            cmd.arg(&old.id)
                .arg(old.revision)
                .arg(&old_identity)
                .arg(&new_identity)
                .arg(&json)
                .arg(&self.keys.channel)
                .arg(lifetime_ms)
                .arg(&removed);
        })
        .await
    }

    async fn delete_config(&self, old: &ModelConfig) -> Result<u64, WriteError> {
        let identity = old.identity();
        let counters = self.keys.counters(&old.id);
        let keys = self.keys.for_config_write(&counters);
        self.write_script(&self.scripts.delete, &keys, |cmd| {
            cmd.arg(&old.id)
                .arg(old.revision)
                .arg(&identity)
                .arg(&self.keys.channel);
        })
        .await
    }

    async fn check(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        dry_run: bool,
    ) -> Result<CheckOutcome, StoreError> {
        let sent = local_ms();
        let deadline = self.clock.deadline(sent, self.timeout);
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(configs.len());
            self.counter_keys(cmd, configs);
            cmd.arg(if dry_run { "1" } else { "0" })
                .arg(amounts.requests)
                .arg(amounts.tokens)
                .arg(amounts.cost_nanos)
                .arg(deadline);
            Self::limit_args(cmd, configs);
        };
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self
            .bounded(self.timeout, invoke(&mut conn, &self.scripts.check, fill))
            .await?;
        self.observe_clock(sent, &reply)?;
        let expected: usize = configs.iter().map(|c| c.limits.len()).sum();
        if reply.len() != 2 + 4 * expected {
            return Err(corrupt(format_args!(
                "check answered {} values for {expected} limits",
                reply.len()
            )));
        }
        let limits = reply[2..]
            .chunks_exact(4)
            .map(|c| LimitOutcome {
                admitted: c[0] == 1,
                used: c[1],
                reset_after_ms: c[2],
                retry_after_ms: c[3],
            })
            .collect();
        Ok(CheckOutcome {
            allowed: reply[0] == 1,
            limits,
            now_ms: reply[1],
        })
    }

    async fn record_usage(
        &self,
        configs: &[&CompiledConfig],
        delta: UsageDelta,
        request_id: Option<&str>,
    ) -> Result<UsageOutcome, StoreError> {
        let marker = self.keys.usage_id(request_id.unwrap_or(""));
        let sent = local_ms();
        let deadline = self.clock.deadline(sent, self.timeout);
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(1 + configs.len()).arg(&marker);
            self.counter_keys(cmd, configs);
            cmd.arg(if request_id.is_some() { "1" } else { "0" })
                .arg(USAGE_ID_TTL.as_millis() as u64)
                .arg(delta.tokens)
                .arg(delta.cost_nanos)
                .arg(deadline)
                .arg(delta.reserved_at_ms.unwrap_or(0));
            Self::limit_args(cmd, configs);
        };
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self
            .bounded(self.timeout, invoke(&mut conn, &self.scripts.usage, fill))
            .await?;
        self.observe_clock(sent, &reply)?;
        match reply.first() {
            Some(1) => Ok(UsageOutcome::Applied),
            Some(0) => Ok(UsageOutcome::Duplicate),
            _ => Err(corrupt("malformed usage answer")),
        }
    }

    async fn read_usage(
        &self,
        configs: &[&CompiledConfig],
    ) -> Result<(i64, Vec<Vec<LimitUsage>>), StoreError> {
        if configs.is_empty() {
            return Ok((chrono::Utc::now().timestamp_millis(), Vec::new()));
        }
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(configs.len());
            self.counter_keys(cmd, configs);
            Self::limit_args(cmd, configs);
        };
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self
            .bounded(
                self.bulk_timeout,
                invoke(&mut conn, &self.scripts.read_usage, fill),
            )
            .await?;
        let expected: usize = configs.iter().map(|c| c.limits.len()).sum();
        if reply.len() != 1 + 2 * expected {
            return Err(corrupt("read_usage answered the wrong number of values"));
        }
        let mut values = reply[1..].chunks_exact(2);
        let usage = configs
            .iter()
            .map(|c| {
                c.limits
                    .iter()
                    .map(|_| {
                        let v = values.next().expect("length checked");
                        LimitUsage {
                            used: v[0],
                            start_ms: v[1],
                        }
                    })
                    .collect()
            })
            .collect();
        Ok((reply[0], usage))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offset_takes_the_tightest_sample_and_reseeds() {
        let clock = ClockOffset::new();
        let timeout = Duration::from_millis(100);
        assert_eq!(
            clock.deadline(1_000, timeout),
            0,
            "no deadline before any sample"
        );
        // Redis is 5_000 ms ahead; samples include 3 and 1 ms of delay.
        clock.observe(1_000, 6_003, false);
        clock.observe(1_010, 6_011, false);
        clock.observe(1_020, 6_025, false);
        assert_eq!(clock.deadline(2_000, timeout), 2_000 + 5_001 + 100);
        // A reply past its deadline re-seeds (our clock may have stepped back 50 ms).
        clock.observe(1_030, 6_080, true);
        assert_eq!(clock.deadline(2_000, timeout), 2_000 + 5_050 + 100);
        // After the re-seed period, the next sample replaces the estimate.
        clock.observe(
            1_030 + OFFSET_RESEED_MS + 1,
            6_030 + OFFSET_RESEED_MS + 1 + 7,
            false,
        );
        assert_eq!(clock.deadline(0, timeout), 5_007 + 100);
    }
}
