//! Names of everything tollgate keeps in Redis.

/// Names of everything tollgate keeps in Redis, under the deployment's prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    pub configs: String,
    pub identities: String,
    pub version: String,
    /// epoch, floor, and the re-seed lease (see `lua/config_lib.lua`).
    pub meta: String,
    /// Change log: live config id → version of its last write.
    pub log: String,
    /// Deleted config id → version of its deletion (the last 100,000).
    pub tombstones: String,
    pub channel: String,
    /// Written by the readiness probe: does Redis accept writes?
    pub probe: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
            configs: format!("{prefix}configs"),
            identities: format!("{prefix}config_identities"),
            version: format!("{prefix}config_version"),
            meta: format!("{prefix}config_meta"),
            log: format!("{prefix}config_log"),
            tombstones: format!("{prefix}config_tombstones"),
            channel: format!("{prefix}config_changes"),
            probe: format!("{prefix}ready_probe"),
        }
    }

    pub fn counters(&self, config_id: &str) -> String {
        format!("{}c:{config_id}", self.prefix)
    }

    /// The first KEYS of every config-plane script (see `lua/config_lib.lua`).
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
    /// day and the hash number).
    pub fn usage_markers(&self) -> String {
        format!("{}u:", self.prefix)
    }
}
