//! The embedded store: one process, counters in memory (`counters`), configs optionally
//! kept in a state file that is replaced atomically (write to a temp file, fsync,
//! rename). This file holds the config set and its writes (`store::ConfigWrites`) and
//! the store's health; `config_log` the log replicas follow.

mod config_log;
mod counters;
mod fields;
mod seeds;

use self::config_log::ChangeLog;
use self::counters::Counters;
use self::seeds::seed_budgets;
use super::{
    ConfigWrites, Health, StoreError, WriteError, Written, budget_seeds, removed_budget_fields,
};
use crate::limits::CompiledConfig;
use crate::model::{Id, ModelConfig};
use crate::state_file::{self, StateFile};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
struct Configs {
    version: u64,
    /// Never changes: this store never loses its data behind its own back.
    epoch: String,
    configs: HashMap<Id, ModelConfig>,
    log: ChangeLog,
}

impl Default for Configs {
    fn default() -> Self {
        Configs {
            version: 0,
            epoch: uuid::Uuid::new_v4().to_string(),
            configs: HashMap::new(),
            log: ChangeLog::default(),
        }
    }
}

pub struct MemoryStore {
    configs: Mutex<Configs>,
    counters: Mutex<Counters>,
    /// Serializes config writes so the state file always ends with the latest set.
    write_lock: tokio::sync::Mutex<()>,
    state_file: Option<PathBuf>,
    changes: Arc<Notify>,
}

pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            configs: Mutex::new(Configs::default()),
            counters: Mutex::new(Counters::default()),
            write_lock: tokio::sync::Mutex::new(()),
            state_file: None,
            changes: Arc::new(Notify::new()),
        }
    }

    /// Loads configs from `path` if it exists (see `crate::state_file::open`).
    pub fn with_state_file(path: &Path) -> Result<Self, String> {
        let mut store = MemoryStore::new();
        if let Some(state) = state_file::open(path)? {
            let configs = store.configs.get_mut();
            configs.version = state.version;
            configs.log = ChangeLog::starting_at(state.version);
            if let Some(epoch) = state.epoch {
                configs.epoch = epoch;
            }
            configs.configs = state
                .configs
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect();
        }
        store.state_file = Some(path.to_path_buf());
        Ok(store)
    }

    /// Computes the next config set with `change` (to config `id`), persists it, then
    /// makes it current.
    async fn write(
        &self,
        id: &str,
        change: impl FnOnce(&mut Configs) -> Result<(), WriteError>,
    ) -> Result<Written, WriteError> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.configs.lock().clone();
        change(&mut next)?;
        next.version += 1;
        let deleted = !next.configs.contains_key(id);
        next.log.record(id, next.version, deleted);
        if let Some(path) = &self.state_file {
            let mut configs: Vec<ModelConfig> = next.configs.values().cloned().collect();
            configs.sort_by(|a, b| a.list_order().cmp(&b.list_order()));
            let state = StateFile {
                version: next.version,
                epoch: Some(next.epoch.clone()),
                configs,
            };
            let path = path.clone();
            tokio::task::spawn_blocking(move || state_file::write_atomically(&path, &state))
                .await
                .map_err(|e| StoreError::Unavailable(format!("state file writer failed: {e}")))?
                .map_err(StoreError::Unavailable)?;
        }
        let written = Written {
            version: next.version,
            epoch: next.epoch.clone(),
        };
        *self.configs.lock() = next;
        Ok(written)
    }
}

/// A writer whose snapshot belongs to another epoch must sync first (as with Redis).
fn fence(set: &Configs, epoch: Option<&str>) -> Result<(), WriteError> {
    match epoch {
        Some(e) if e != set.epoch => Err(WriteError::EpochChanged),
        _ => Ok(()),
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl ConfigWrites for MemoryStore {
    async fn get_config(&self, id: &str) -> Result<Option<ModelConfig>, StoreError> {
        Ok(self.configs.lock().configs.get(id).cloned())
    }

    async fn create_config(
        &self,
        config: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        self.write(&config.id, |set| {
            fence(set, epoch)?;
            let identity = config.identity();
            if let Some(other) = set.configs.values().find(|c| c.identity() == identity) {
                return Err(WriteError::Conflict(other.id.to_string()));
            }
            set.configs.insert(config.id.clone(), config.clone());
            Ok(())
        })
        .await
    }

    async fn replace_config(
        &self,
        old: &ModelConfig,
        new: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        let lifetime = CompiledConfig::counter_lifetime_of(new).map_err(StoreError::Corrupt)?;
        let seeds = budget_seeds(old, new).map_err(StoreError::Corrupt)?;
        let written = self
            .write(&old.id, |set| {
                fence(set, epoch)?;
                match set.configs.get(&old.id) {
                    None => return Err(WriteError::NotFound),
                    Some(c) if c.revision != old.revision => return Err(WriteError::Stale),
                    Some(_) => {}
                }
                let identity = new.identity();
                if let Some(other) = set
                    .configs
                    .values()
                    .find(|c| c.id != new.id && c.identity() == identity)
                {
                    return Err(WriteError::Conflict(other.id.to_string()));
                }
                set.configs.insert(new.id.clone(), new.clone());
                Ok(())
            })
            .await?;
        let removed = removed_budget_fields(old, new);
        // Checks still run on the old config until the caller applies the new one, so
        // nothing counts on the new budgets in between.
        if let Some(c) = self.counters.lock().by_config.get_mut(&old.id) {
            seed_budgets(c, &seeds, now_ms());
            for field in removed {
                c.budgets.remove(&field);
            }
            // Kept counters must outlive a longer new limit, as in Redis.
            if c.expires_ms > now_ms() {
                c.expires_ms = c.expires_ms.max(now_ms() + lifetime);
            }
        }
        Ok(written)
    }

    async fn delete_config(
        &self,
        old: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        let written = self
            .write(&old.id, |set| match set.configs.get(&old.id) {
                _ if fence(set, epoch).is_err() => Err(WriteError::EpochChanged),
                None => Err(WriteError::NotFound),
                Some(c) if c.revision != old.revision => Err(WriteError::Stale),
                Some(_) => {
                    set.configs.remove(&old.id);
                    Ok(())
                }
            })
            .await?;
        self.counters.lock().by_config.remove(&old.id);
        Ok(written)
    }
}

/// One process, always there.
impl Health for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn clock(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(Utc::now())
    }
}
