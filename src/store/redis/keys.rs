//! Names of everything tollgate keeps in Redis.
//!
//! Standalone: the names of every release so far, so existing deployments' data stays
//! readable. Cluster: the same names with hash tags (`{…}`), so that each script's keys
//! sit in one hash slot: the config plane (configs, identities, version, meta, log,
//! tombstones, ready probe, change channel) in the slot of `{cfg}`, and the counters in
//! a few counter slots (`--cluster-counter-slots`, see `counter_tags`): a config's
//! counters in the slot of its bucket (`c:{tg:<b>:<n>}:<id>`), so that concurrent checks
//! on one node share script calls as on one Redis (each slot has one call in flight,
//! coalescing what arrives meanwhile; with one slot per config they almost never did).
//! With 0 counter slots, each config's counters sit in the slot of its id
//! (`c:{<id>}`), as in earlier releases.

use super::cluster::key_slot;

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
    /// Cluster: which counter layout the counters were last migrated to
    /// (`counter_layout_mark`; see `cluster::migrate`).
    pub counter_layout: String,
    /// Cluster: the hash tags of the counter slots (empty: one slot per config).
    counter_tags: Vec<String>,
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
            counter_layout: format!("{plane}counter_layout"),
            counter_tags: Vec::new(),
        }
    }

    /// On Redis Cluster, the counters in `n` counter slots (0: one slot per config, the
    /// layout of earlier releases). Ignored on one Redis.
    pub fn with_counter_slots(mut self, n: u16) -> Self {
        if self.cluster {
            self.counter_tags = counter_tags(n);
        }
        self
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    pub fn counters(&self, config_id: &str) -> String {
        if !self.cluster {
            format!("{}c:{config_id}", self.prefix)
        } else if self.counter_tags.is_empty() {
            self.counters_per_config(config_id)
        } else {
            let bucket = key_slot(config_id.as_bytes()) as usize % self.counter_tags.len();
            format!(
                "{}c:{{{}}}:{config_id}",
                self.prefix, self.counter_tags[bucket]
            )
        }
    }

    /// Where a config's counters sit on Redis Cluster with one slot per config (earlier
    /// releases, and `--cluster-counter-slots 0`): migrated from there (`cluster::migrate`).
    pub fn counters_per_config(&self, config_id: &str) -> String {
        format!("{}c:{{{config_id}}}", self.prefix)
    }

    /// What `counter_layout` holds once the counters are in this layout.
    pub fn counter_layout_mark(&self) -> String {
        format!("slots:{}", self.counter_tags.len())
    }

    /// Whether the counters sit in counter slots (not one slot per config).
    pub fn has_counter_slots(&self) -> bool {
        !self.counter_tags.is_empty()
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
    /// report's markers in the slot of the first config the call touches for it
    /// (`cluster_marker_base`): one marker per slot touched, written atomically with that
    /// slot's counters.
    pub fn usage_markers(&self) -> String {
        if self.cluster {
            String::new()
        } else {
            format!("{}u:", self.prefix)
        }
    }
}

/// On Redis Cluster, where the markers of a report whose first config in a slot has its
/// counters at `counters_key` live: the slot's own marker hashes in counter slots
/// (`<prefix>u:{tg:…}:`, shared by every config of the slot, as on one Redis), or with
/// one slot per config beside that config's counters (`<counters key>:u:`).
pub(super) fn cluster_marker_base(counters_key: &str) -> String {
    if let Some(at) = counters_key.find("c:{tg:")
        && let Some(close) = counters_key[at..].find('}')
    {
        let (prefix, tag) = (&counters_key[..at], &counters_key[at + 2..=at + close]);
        return format!("{prefix}u:{tag}:");
    }
    format!("{counters_key}:u:")
}

/// The hash tags of `n` counter slots: tag `b` names a slot in the middle of the `b`-th
/// of `n` equal ranges of the 16,384 slots, so that on a cluster of `n` masters with the
/// slots split evenly (`redis-cli --cluster create`), each master holds one counter slot
/// (and with `k × n` slots, `k` each). The same on every replica and release.
fn counter_tags(n: u16) -> Vec<String> {
    let n = u32::from(n);
    (0..n)
        .map(|b| {
            let (lo, hi) = (b * 16384 / n, (b + 1) * 16384 / n);
            let (mid, reach) = ((lo + hi) / 2, ((hi - lo) / 4).max(1));
            (0u32..)
                .map(|i| format!("tg:{b}:{i}"))
                .find(|tag| u32::from(key_slot(tag.as_bytes())).abs_diff(mid) < reach)
                .expect("CRC16 reaches every slot")
        })
        .collect()
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
        assert_eq!(cluster_marker_base(&c.counters("a")), "tollgate:c:{a}:u:");
    }

    #[test]
    fn counter_slots_spread_over_even_slot_ranges() {
        let k = Keys::new("tollgate:", true).with_counter_slots(3);
        let tags = counter_tags(3);
        for (b, tag) in tags.iter().enumerate() {
            let slot = key_slot(tag.as_bytes()) as usize;
            assert_eq!(slot * 3 / 16384, b, "{tag} in range {b}");
        }
        let key = k.counters("a");
        assert!(
            key.starts_with("tollgate:c:{tg:") && key.ends_with("}:a"),
            "{key}"
        );
        assert!(
            tags.iter()
                .any(|t| key_slot(key.as_bytes()) == key_slot(t.as_bytes()))
        );
        let base = cluster_marker_base(&key);
        assert!(
            base.starts_with("tollgate:u:{tg:") && base.ends_with("}:"),
            "{base}"
        );
        assert_eq!(key_slot(base.as_bytes()), key_slot(key.as_bytes()));
        let ids: Vec<String> = (0..300).map(|i| format!("id-{i}")).collect();
        let slots: std::collections::HashSet<u16> = ids
            .iter()
            .map(|id| key_slot(k.counters(id).as_bytes()))
            .collect();
        assert_eq!(slots.len(), 3, "every counter slot used");
        assert_eq!(
            Keys::new("p:", false).with_counter_slots(3).counters("a"),
            "p:c:a"
        );
        assert_eq!(
            Keys::new("p:", true).with_counter_slots(0).counters("a"),
            "p:c:{a}"
        );
    }
}
