//! Names of everything tollgate keeps in Redis.
//!
//! Standalone: the names of every release so far, so existing deployments' data stays
//! readable. Cluster: the same names with hash tags (`{…}`), so that each script's keys
//! sit in one hash slot: the config plane (configs, identities, version, meta, log,
//! tombstones, ready probe, change channel) in the slot of `{cfg}`, each config's
//! counters in the slot of its id (`c:{<id>}`), which spreads the counters, and so the
//! load, over the shards.

/// Names of everything tollgate keeps in Redis, under the deployment's prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    cluster: bool,
    pub configs: String,
    pub identities: String,
    pub version: String,
    /// epoch, floor, and the re-seed lease (see `lua/lib/config_plane.lua`).
    pub meta: String,
    /// Change log: live config id → version of its last write.
    pub log: String,
    /// Deleted config id → version of its deletion (the last 100,000).
    pub tombstones: String,
    pub channel: String,
    /// Written by the readiness probe: does Redis accept writes?
    pub probe: String,
    /// Cluster only: never written; stands in for a config's counters in config-plane
    /// scripts, whose keys must share one slot (the counters are maintained by a second
    /// call in their own slot, see `cluster::counters`).
    pub no_counters: String,
    /// The replicas alive (`--on-store-error local`): one sorted set, in the config
    /// plane's slot on Redis Cluster.
    pub replicas: String,
}

impl Keys {
    pub fn new(prefix: &str, cluster: bool) -> Self {
        let plane = if cluster {
            format!("{prefix}{{cfg}}")
        } else {
            prefix.to_string()
        };
        Keys {
            prefix: prefix.to_string(),
            cluster,
            configs: format!("{plane}configs"),
            identities: format!("{plane}config_identities"),
            version: format!("{plane}config_version"),
            meta: format!("{plane}config_meta"),
            log: format!("{plane}config_log"),
            tombstones: format!("{plane}config_tombstones"),
            channel: format!("{plane}config_changes"),
            probe: format!("{plane}ready_probe"),
            no_counters: format!("{plane}no_counters"),
            replicas: format!("{plane}replicas"),
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    pub fn counters(&self, config_id: &str) -> String {
        if self.cluster {
            format!("{}c:{{{config_id}}}", self.prefix)
        } else {
            format!("{}c:{config_id}", self.prefix)
        }
    }

    /// The first KEYS of every config-plane script (see `lua/lib/config_plane.lua`).
    pub(super) fn config_plane(&self) -> [&str; 6] {
        [
            &self.configs,
            &self.identities,
            &self.version,
            &self.meta,
            &self.log,
            &self.tombstones,
        ]
    }

    /// Prefix of the hashes that hold usage-report markers (`lua/usage.lua` appends the
    /// day and the hash number). Cluster: empty, which tells `batch.lua` to keep each
    /// report's markers beside the counters of the first config the call touches for it
    /// (`<counters key>:u:<day>:<n>`, same slot): one marker per shard touched, written
    /// atomically with that shard's counters.
    pub fn usage_markers(&self) -> String {
        if self.cluster {
            String::new()
        } else {
            format!("{}u:", self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_names_are_unchanged_and_cluster_names_are_tagged() {
        let s = Keys::new("tollgate:", false);
        assert_eq!(s.configs, "tollgate:configs");
        assert_eq!(s.counters("a"), "tollgate:c:a");
        assert_eq!(s.usage_markers(), "tollgate:u:");
        let c = Keys::new("tollgate:", true);
        assert_eq!(c.configs, "tollgate:{cfg}configs");
        assert_eq!(c.channel, "tollgate:{cfg}config_changes");
        assert_eq!(c.counters("a"), "tollgate:c:{a}");
        assert_eq!(c.usage_markers(), "");
    }
}
