//! The embedded store: one process, counters in memory, configs optionally kept in a
//! state file that is replaced atomically (write to a temp file, fsync, rename).

mod counters;

use self::counters::{Counters, seed_budgets};
use super::{
    Amounts, CheckOutcome, ConfigChanges, ConfigState, LimitUsage, ReseedOutcome, Seeding, Store,
    StoreError, UsageDelta, UsageOutcome, WriteError, Written, budget_seeds, removed_budget_fields,
};
use crate::limits::CompiledConfig;
use crate::model::ModelConfig;
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
    configs: HashMap<String, ModelConfig>,
}

impl Default for Configs {
    fn default() -> Self {
        Configs {
            version: 0,
            epoch: uuid::Uuid::new_v4().to_string(),
            configs: HashMap::new(),
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

    /// Computes the next config set with `change`, persists it, then makes it current.
    async fn write(
        &self,
        change: impl FnOnce(&mut Configs) -> Result<(), WriteError>,
    ) -> Result<Written, WriteError> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.configs.lock().clone();
        change(&mut next)?;
        next.version += 1;
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

impl Store for MemoryStore {
    /// Never lost, so never incremental either: a replica behind is told to reload
    /// (the floor is the version), which for this one-process store is rare.
    async fn config_changes(
        &self,
        _since: u64,
        _limit: usize,
    ) -> Result<ConfigChanges, StoreError> {
        let configs = self.configs.lock();
        Ok(ConfigChanges {
            state: ConfigState {
                epoch: Some(configs.epoch.clone()),
                version: configs.version,
                intact: true,
                seeding: Seeding::None,
                floor: configs.version,
                configs: configs.configs.len() as u64,
            },
            changed: Vec::new(),
            through: configs.version,
        })
    }

    async fn scan_configs(&self, _cursor: u64) -> Result<(u64, Vec<ModelConfig>), StoreError> {
        Ok((0, self.configs.lock().configs.values().cloned().collect()))
    }

    async fn reseed(
        &self,
        _found: Option<&str>,
        _configs: Vec<ModelConfig>,
        _min_version: u64,
    ) -> Result<ReseedOutcome, StoreError> {
        Ok(ReseedOutcome::Adopt)
    }

    async fn get_config(&self, id: &str) -> Result<Option<ModelConfig>, StoreError> {
        Ok(self.configs.lock().configs.get(id).cloned())
    }

    async fn create_config(
        &self,
        config: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        self.write(|set| {
            fence(set, epoch)?;
            let identity = config.identity();
            if let Some(other) = set.configs.values().find(|c| c.identity() == identity) {
                return Err(WriteError::Conflict(other.id.clone()));
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
            .write(|set| {
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
                    return Err(WriteError::Conflict(other.id.clone()));
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
            .write(|set| match set.configs.get(&old.id) {
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

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn clock(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(Utc::now())
    }

    fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }
}
