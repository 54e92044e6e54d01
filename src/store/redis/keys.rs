//! Names of everything tollgate keeps in Redis.

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
    pub(super) fn for_config_write<'a>(&'a self, counters: &'a str) -> [&'a str; 4] {
        [&self.configs, &self.identities, &self.version, counters]
    }

    /// Prefix of the hashes that hold usage-report markers (`lua/usage.lua` appends the
    /// day and the hash number).
    pub fn usage_markers(&self) -> String {
        format!("{}u:", self.prefix)
    }
}
