//! Command-line flags and environment variables (a flag wins over its variable).

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreErrorPolicy {
    /// Let the request through (fail open).
    Allow,
    /// Refuse the request with 429 (fail closed).
    Deny,
    /// Decide in this process against this replica's share of each limit,
    /// (max − used last seen) / replicas alive, and charge Redis with what was admitted
    /// once it answers again (docs/local-fallback.md).
    Local,
}

/// How tollgate finds the Redis that holds its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisMode {
    /// One Redis at --redis-url.
    Standalone,
    /// Redis Cluster; --redis-url lists seed nodes, comma-separated.
    Cluster,
    /// Redis Sentinel; --redis-url lists the sentinels, --sentinel-master names the master.
    Sentinel,
}

impl StoreErrorPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorPolicy::Allow => "allow",
            StoreErrorPolicy::Deny => "deny",
            StoreErrorPolicy::Local => "local",
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Distributed rate-limit and budget sidecar for LLM gateways",
    long_about = "Distributed rate-limit and budget sidecar for LLM gateways.\n\n\
        Without --redis-url, tollgate runs on an embedded in-memory store (one instance, \
        counters not shared). With --redis-url, every tollgate sharing that Redis enforces \
        one set of limits."
)]
pub struct Settings {
    /// Address of the HTTP server (management, check, metrics, health): ip:port, or
    /// host:port resolved once at start (its first address).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Also serve the HTTP API on a Unix-domain socket at this path, for a gateway on the
    /// same host: the same routes and API keys as --listen, at about a quarter less CPU
    /// per check than loopback TCP (no TCP stack). A socket left at the path by a
    /// tollgate that did not stop cleanly is replaced; any other file is refused. Its
    /// permissions follow the umask (connecting needs write permission); it is removed
    /// at shutdown.
    #[arg(long, env = "TOLLGATE_LISTEN_UNIX", value_name = "PATH")]
    pub listen_unix: Option<std::path::PathBuf>,

    /// redis:// or rediss:// URL. Absent: the embedded in-memory store. With
    /// --redis-mode sentinel: the sentinels, comma-separated, each with its own
    /// credentials (`redis://:password@host:26379`).
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// standalone (one Redis), sentinel (follow the master the sentinels name through
    /// failovers) or cluster (Redis Cluster: --redis-url lists seed nodes,
    /// comma-separated).
    #[arg(long, env = "TOLLGATE_REDIS_MODE", value_enum, default_value_t = RedisMode::Standalone)]
    pub redis_mode: RedisMode,

    /// With --redis-mode sentinel: the name of the master, as in the sentinels'
    /// `sentinel monitor <name> ...`.
    #[arg(long, env = "TOLLGATE_SENTINEL_MASTER")]
    pub sentinel_master: Option<String>,

    /// With --redis-mode sentinel: the master's password (its `requirepass`). Absent:
    /// the password of the sentinel URL the master was learnt from; empty: none.
    #[arg(long, env = "TOLLGATE_REDIS_MASTER_PASSWORD", hide_env_values = true)]
    pub redis_master_password: Option<String>,

    /// With --redis-mode sentinel: the master's ACL user name. Absent: the user name of
    /// the sentinel URL; empty: none (the default user).
    #[arg(long, env = "TOLLGATE_REDIS_MASTER_USERNAME")]
    pub redis_master_username: Option<String>,

    /// After each check or usage report that changed counters, wait (Redis `WAIT`) until
    /// this many replicas have it, so that a master failover cannot lose it. A write the
    /// replicas do not confirm within --store-timeout-ms stays answered and counted on
    /// the master (shown by /ready and tollgate_redis_wait_short); keep
    /// --store-timeout-ms above the replication round trip + 50 ms. 0 (the default) does
    /// not wait: counts acknowledged within the replication lag before a master crash
    /// are lost (docs/redis-topologies.md, "Failover loss").
    #[arg(long, env = "TOLLGATE_REDIS_WAIT_REPLICAS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=64))]
    pub redis_wait_replicas: u32,

    /// With --redis-mode cluster: how many hash slots hold the counters. Each config's
    /// counters go to one of them (by its id), so concurrent checks on a node share
    /// script calls as on one Redis; set it to the number of masters (or a multiple),
    /// whose slots are split evenly. 0: one slot per config (earlier releases' layout,
    /// whose calls almost never coalesce). Counters in the other layout are moved at
    /// start (docs/redis-cpu.md).
    #[arg(long, env = "TOLLGATE_CLUSTER_COUNTER_SLOTS", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub cluster_counter_slots: u16,

    /// Bearer key for /api/*; repeat the flag or separate keys with commas.
    #[arg(
        long = "api-key",
        env = "TOLLGATE_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Prefix of every Redis key, so deployments can share one Redis.
    #[arg(long, env = "TOLLGATE_KEY_PREFIX", default_value = "tollgate:")]
    pub key_prefix: String,

    /// Keep configs across restarts in this file. With --redis-url: this replica's local
    /// copy of its snapshot, which restores configs into a Redis that lost them.
    #[arg(long, env = "TOLLGATE_STATE_FILE")]
    pub state_file: Option<PathBuf>,

    /// Run on a Redis whose maxmemory-policy is allkeys-* (it may evict configs and
    /// counters under memory pressure). (The variable takes true/false, 1/0, yes/no, on/off.)
    #[arg(long, env = "TOLLGATE_ALLOW_EVICTING_REDIS", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_evicting_redis: bool,

    /// Allow a non-loopback --listen address without any --api-key.
    /// (The variable takes true/false, 1/0, yes/no, on/off.)
    #[arg(long, env = "TOLLGATE_INSECURE_NO_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_no_auth: bool,

    /// What a check answers when the store cannot be reached in time.
    #[arg(long, env = "TOLLGATE_ON_STORE_ERROR", value_enum, default_value_t = StoreErrorPolicy::Allow)]
    pub on_store_error: StoreErrorPolicy,

    /// Longest wait for one store call on the request path, in milliseconds.
    #[arg(long, env = "TOLLGATE_STORE_TIMEOUT_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub store_timeout_ms: u64,

    /// How often each replica polls the store for config changes it was not told about.
    #[arg(long, env = "TOLLGATE_CONFIG_POLL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub config_poll_ms: u64,

    /// Export the usage of every limit (gauges tollgate_limit_used, tollgate_limit_max,
    /// labelled with config fields) for the N configs with the highest usage ratio this
    /// replica has seen: series stay within N configs' worth whatever the number of
    /// configs. 0 turns them off.
    #[arg(long, env = "TOLLGATE_USAGE_METRICS", default_value_t = crate::observe::DEFAULT_USAGE_METRICS)]
    pub usage_metrics: usize,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "TOLLGATE_MAX_BODY_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Threads serving requests (default: one less than the CPUs, at least one, leaving a
    /// CPU to the gateway and Redis beside it).
    #[arg(long, env = "TOLLGATE_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// On SIGTERM, how long in-flight requests may take to finish, in seconds.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Address of Envoy's gRPC rate limit service
    /// (`envoy.service.ratelimit.v3.RateLimitService`): ip:port or host:port. Off unless
    /// given, so that several replicas can share a machine.
    #[arg(long, env = "TOLLGATE_GRPC_LISTEN", value_parser = parse_listen)]
    pub grpc_listen: Option<SocketAddr>,

    /// Envoy descriptor entry holding the model (required for a descriptor to match).
    #[arg(long, env = "TOLLGATE_RLS_MODEL_KEY", default_value = "model")]
    pub rls_model_key: String,

    /// Envoy descriptor entry holding the provider.
    #[arg(long, env = "TOLLGATE_RLS_PROVIDER_KEY", default_value = "provider")]
    pub rls_provider_key: String,

    /// Envoy descriptor entry holding the virtual key.
    #[arg(
        long,
        env = "TOLLGATE_RLS_VIRTUAL_KEY_KEY",
        default_value = "virtual_key"
    )]
    pub rls_virtual_key_key: String,

    /// Envoy descriptor entry holding the user.
    #[arg(long, env = "TOLLGATE_RLS_USER_KEY", default_value = "user")]
    pub rls_user_key: String,

    /// Envoy rate limit domains whose `hits_addend` is a token count recorded as used
    /// (like POST /v1/usage: never refused), for response-phase calls
    /// (`apply_on_stream_done`). Other domains count requests. Comma-separated.
    #[arg(long, env = "TOLLGATE_RLS_TOKEN_DOMAINS", value_delimiter = ',')]
    pub rls_token_domains: Vec<String>,

    /// POST every threshold event here as JSON (http:// or https://). A 2xx answer
    /// delivers it; anything else is retried with backoff for at least 10 minutes, from
    /// a queue of at most 10,000 events. Without it, events are only logged (target
    /// tollgate::alert) and counted.
    #[arg(long, env = "TOLLGATE_ALERT_WEBHOOK", hide_env_values = true)]
    pub alert_webhook: Option<String>,

    /// Sign each webhook request: header `X-Tollgate-Signature: sha256=<hex
    /// HMAC-SHA256 of the body>` with this key. Empty: unsigned.
    #[arg(long, env = "TOLLGATE_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<String>,
    #[command(flatten)]
    pub configs_file: crate::configs_file::ConfigsFileSettings,

    #[command(flatten)]
    pub policy: PolicySettings,

    #[command(flatten)]
    pub local: LocalSettings,

    #[command(flatten)]
    pub leases: LeaseSettings,
}

/// `ip:port` as is; `host:port` (e.g. `localhost:8080`) through the system resolver.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let mut addrs = std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("expected ip:port or host:port (e.g. 127.0.0.1:8080): {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{s} resolves to no address"))
}

impl Settings {
    /// API keys with blanks (e.g. an empty variable) removed.
    pub fn api_keys(&self) -> Vec<String> {
        self.api_keys
            .iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect()
    }

    /// Refuses settings that are unsafe or contradictory, with the fix in the message.
    pub fn validate(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.api_keys().is_empty() && !self.insecure_no_auth {
            return Err(format!(
                "refusing to listen on non-loopback address {} without an API key: \
                 set --api-key (or TOLLGATE_API_KEY), or pass --insecure-no-auth",
                self.listen
            ));
        }
        self.validate_redis()?;
        self.alert_webhook()?;
        self.configs_file.validate()?;
        let keys = [
            ("--rls-model-key", &self.rls_model_key),
            ("--rls-provider-key", &self.rls_provider_key),
            ("--rls-virtual-key-key", &self.rls_virtual_key_key),
            ("--rls-user-key", &self.rls_user_key),
        ];
        for (i, (flag, key)) in keys.iter().enumerate() {
            if key.is_empty() {
                return Err(format!("{flag} must not be empty"));
            }
            if let Some((other, _)) = keys[..i].iter().find(|(_, k)| k == key) {
                return Err(format!("{other} and {flag} must differ (both {key:?})"));
            }
        }
        Ok(())
    }

    /// The `--alert-webhook` receiver, if one is set (a blank value is none).
    pub fn alert_webhook(&self) -> Result<Option<crate::alerts::Webhook>, String> {
        match self.alert_webhook.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => {
                crate::alerts::Webhook::new(url, self.alert_webhook_secret.as_deref()).map(Some)
            }
            _ if self
                .alert_webhook_secret
                .as_deref()
                .is_some_and(|s| !s.is_empty()) =>
            {
                Err(
                    "--alert-webhook-secret signs webhook requests, but no --alert-webhook \
                     (TOLLGATE_ALERT_WEBHOOK) is set"
                        .into(),
                )
            }
            _ => Ok(None),
        }
    }

    /// The --redis-url list (sentinels, or cluster seed nodes), blanks removed.
    pub fn redis_urls(&self) -> Vec<String> {
        self.redis_url
            .iter()
            .flat_map(|u| u.split(','))
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }

    fn validate_redis(&self) -> Result<(), String> {
        let urls = self.redis_urls();
        for url in &urls {
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://")
                || url.starts_with("redis+unix://"))
            {
                return Err(format!(
                    "--redis-url must start with redis:// or rediss:// (got {url:?})"
                ));
            }
        }
        let master = self.sentinel_master.as_deref().map(str::trim);
        match self.redis_mode {
            RedisMode::Standalone if urls.len() > 1 => Err(format!(
                "--redis-url lists {} URLs, but --redis-mode standalone takes one; \
                 for sentinels pass --redis-mode sentinel and --sentinel-master NAME, \
                 for Redis Cluster seed nodes --redis-mode cluster",
                urls.len()
            )),
            RedisMode::Standalone | RedisMode::Cluster if master.is_some() => Err(
                "--sentinel-master is only for --redis-mode sentinel (set TOLLGATE_REDIS_MODE=sentinel)"
                    .into(),
            ),
            RedisMode::Cluster if urls.is_empty() => Err(
                "--redis-mode cluster needs --redis-url listing seed nodes \
                 (redis://host:7000,redis://host:7001,...)"
                    .into(),
            ),
            RedisMode::Cluster if urls.iter().any(|u| u.contains("unix://")) => {
                Err("cluster nodes are reached over TCP: redis:// or rediss:// URLs".into())
            }
            RedisMode::Cluster if self.redis_wait_replicas > 0 => Err(
                "--redis-wait-replicas is for standalone and sentinel modes; \
                 not supported with --redis-mode cluster"
                    .into(),
            ),
            RedisMode::Sentinel if urls.is_empty() => Err(
                "--redis-mode sentinel needs --redis-url listing the sentinels \
                 (redis://host:26379,redis://host2:26379,...)"
                    .into(),
            ),
            RedisMode::Sentinel if master.is_none_or(str::is_empty) => Err(
                "--redis-mode sentinel needs --sentinel-master NAME (the name in the \
                 sentinels' `sentinel monitor NAME ...`; env TOLLGATE_SENTINEL_MASTER)"
                    .into(),
            ),
            RedisMode::Sentinel if urls.iter().any(|u| u.contains("unix://")) => {
                Err("sentinels are reached over TCP: redis:// or rediss:// URLs".into())
            }
            _ => Ok(()),
        }
    }

    /// Settings for tests and embedding: loopback, random port, memory store.
    pub fn for_tests() -> Self {
        Settings::parse_from(["tollgate", "--listen", "127.0.0.1:0"])
    }
}

mod leases;
mod local;
mod policy;
pub use leases::LeaseSettings;
pub use local::LocalSettings;
pub use policy::{PolicySettings, Thresholds};

#[cfg(test)]
mod redis_mode_tests;

#[cfg(test)]
mod tests;
