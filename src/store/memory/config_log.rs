//! The embedded store's config log (`store::ConfigLog`): which config changed at which
//! version, so a sync reads only what changed since its snapshot's version, as it does
//! from Redis's change log.
//!
//! The other parts of the log are trivial here, and why that is correct: one process
//! owns the store, so its data has one epoch that never changes, is always intact, and
//! is never re-seeded (a sync never plans a re-seed against it: the epoch is always
//! there and the version never goes back); and the only writer is this process's own
//! `App`, which applies each of its writes to its snapshot at once, so no other replica
//! ever needs notifying (`changes` is never notified; the poll remains).

use super::MemoryStore;
use crate::model::ModelConfig;
use crate::store::{ConfigChanges, ConfigLog, ConfigState, ReseedOutcome, Seeding, StoreError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::Notify;

/// Deletions remembered for incremental syncs; older ones raise the floor (as in Redis).
const MAX_TOMBSTONES: usize = 100_000;

/// Each config id at the version of its last change, like Redis's `config_log` and
/// `config_tombstones` together.
#[derive(Debug, Clone, Default)]
pub(super) struct ChangeLog {
    /// Version of each logged id's last change (a write or its deletion).
    last_change: HashMap<String, u64>,
    /// Version → the id whose last change it is.
    by_version: BTreeMap<u64, String>,
    /// The versions in `by_version` that are deletions.
    tombstones: BTreeSet<u64>,
    /// Changes at or below this version may be gone from the log.
    floor: u64,
}

impl ChangeLog {
    /// A log that knows nothing up to `version` (a store loaded from its state file).
    pub(super) fn starting_at(version: u64) -> Self {
        ChangeLog {
            floor: version,
            ..ChangeLog::default()
        }
    }

    /// `id` was written (or deleted) at `version`.
    pub(super) fn record(&mut self, id: &str, version: u64, deleted: bool) {
        if let Some(old) = self.last_change.insert(id.to_string(), version) {
            self.by_version.remove(&old);
            self.tombstones.remove(&old);
        }
        self.by_version.insert(version, id.to_string());
        if deleted {
            self.tombstones.insert(version);
            if self.tombstones.len() > MAX_TOMBSTONES
                && let Some(oldest) = self.tombstones.pop_first()
            {
                if let Some(id) = self.by_version.remove(&oldest) {
                    self.last_change.remove(&id);
                }
                self.floor = self.floor.max(oldest);
            }
        }
    }

    /// The ids changed after `since`, oldest first, at most `limit` of them, and the
    /// version they bring a reader to (`version` when there are no more).
    fn since(&self, since: u64, limit: usize, version: u64) -> (Vec<&str>, u64) {
        let mut ids = Vec::new();
        let mut through = version;
        for (&at, id) in self.by_version.range(since + 1..) {
            if ids.len() == limit {
                break;
            }
            ids.push(id.as_str());
            through = at;
        }
        if ids.len() < limit {
            through = version;
        }
        (ids, through)
    }
}

impl ConfigLog for MemoryStore {
    async fn config_changes(&self, since: u64, limit: usize) -> Result<ConfigChanges, StoreError> {
        let set = self.configs.lock();
        let state = ConfigState {
            epoch: Some(set.epoch.clone()),
            version: set.version,
            intact: true,
            seeding: Seeding::None,
            floor: set.log.floor,
            configs: set.configs.len() as u64,
        };
        // As config_sync.lua: changes only for a caller that can follow them.
        if since == 0 || since >= set.version || since < set.log.floor {
            return Ok(ConfigChanges {
                state,
                changed: Vec::new(),
                through: set.version,
            });
        }
        let (ids, through) = set.log.since(since, limit.max(1), set.version);
        let changed = ids
            .into_iter()
            .map(|id| (id.to_string(), set.configs.get(id).cloned()))
            .collect();
        Ok(ConfigChanges {
            state,
            changed,
            through,
        })
    }

    /// One page: the whole set, read under its lock (a consistent cut).
    async fn scan_configs(&self, _cursor: u64) -> Result<(u64, Vec<ModelConfig>), StoreError> {
        Ok((0, self.configs.lock().configs.values().cloned().collect()))
    }

    /// Never needed (see the module doc); were it asked, the store's configs are the
    /// truth to adopt.
    async fn reseed(
        &self,
        _found: Option<&str>,
        _configs: Vec<ModelConfig>,
        _min_version: u64,
    ) -> Result<ReseedOutcome, StoreError> {
        Ok(ReseedOutcome::Adopt)
    }

    fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_each_id_at_its_last_change() {
        let mut log = ChangeLog::default();
        log.record("a", 1, false);
        log.record("b", 2, false);
        log.record("a", 3, false);
        log.record("c", 4, true);
        assert_eq!(log.since(0, 10, 4), (vec!["b", "a", "c"], 4));
        assert_eq!(log.since(2, 10, 4), (vec!["a", "c"], 4));
        assert_eq!(log.since(0, 2, 4), (vec!["b", "a"], 3), "a page ends early");
        assert_eq!(log.since(4, 10, 4), (vec![], 4));
    }

    #[test]
    fn old_tombstones_raise_the_floor() {
        let mut log = ChangeLog::starting_at(10);
        for i in 0..=MAX_TOMBSTONES as u64 {
            log.record(&format!("id-{i}"), 11 + i, true);
        }
        assert_eq!(log.floor, 11, "the oldest deletion went");
        assert_eq!(log.tombstones.len(), MAX_TOMBSTONES);
        assert_eq!(log.by_version.len(), MAX_TOMBSTONES);
    }
}
