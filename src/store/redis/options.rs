//! What `RedisStore::connect` takes: where Redis is (`Topology`) and the bounds.

use std::time::Duration;

/// Where the master is.
#[derive(Debug, Clone, Default)]
pub enum Topology {
    /// `url` is the one Redis.
    #[default]
    Standalone,
    /// Redis Cluster: `url` lists seed nodes (comma-separated); keys are tagged by slot
    /// and checks split per slot (`cluster`); the counters sit in `counter_slots` slots
    /// (0: one per config, as in earlier releases; see `Keys`).
    Cluster { counter_slots: u16 },
    /// `url` lists the sentinels (comma-separated); `master` is the name they know the
    /// master by (`sentinel monitor <name> ...`).
    Sentinel {
        master: String,
        /// The master's credentials; None: those of the sentinel URL; empty: none.
        master_username: Option<String>,
        master_password: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// One Redis; or, comma-separated, the sentinels or a cluster's seed nodes (`topology`).
    pub url: String,
    pub topology: Topology,
    pub key_prefix: String,
    /// Bound on one hot-path call (check, usage report, ping, single config ops).
    pub timeout: Duration,
    /// Bound on loading every config.
    pub bulk_timeout: Duration,
    /// Run on a Redis whose `maxmemory-policy` is `allkeys-*` (it may evict configs).
    pub allow_evicting: bool,
    /// Replicas a budget-changing write waits for (`WAIT`); 0: none.
    pub wait_replicas: u32,
}

impl RedisOptions {
    /// One Redis at `url`, with the defaults tollgate runs with.
    pub fn standalone(url: &str, key_prefix: &str, timeout: Duration) -> Self {
        RedisOptions {
            url: url.to_string(),
            topology: Topology::Standalone,
            key_prefix: key_prefix.to_string(),
            timeout,
            bulk_timeout: (timeout * 20).max(Duration::from_secs(5)),
            allow_evicting: false,
            wait_replicas: 0,
        }
    }
}
