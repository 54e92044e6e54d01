//! What a replica learns from the store about the config plane: its epoch (one lifetime
//! of the store's data), its version, and the configs changed since a version; and the
//! trait a store follows it by. Redis: `redis/config_sync.rs`; memory:
//! `memory/config_log.rs`.

use super::StoreError;
use crate::model::ModelConfig;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::Notify;

/// How replicas follow the configs: the state and the changes since a version, full
/// scans, the re-seed of a store that lost its configs, and change notifications.
pub trait ConfigLog {
    /// The config plane's state, and the configs changed after version `since` (at most
    /// about `limit` of them; `since` = 0: only the state).
    fn config_changes(
        &self,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<ConfigChanges, StoreError>> + Send;

    /// One page of every config: start at cursor 0, stop when it answers 0. Pages may
    /// miss or repeat configs written meanwhile: a full load follows it with
    /// `config_changes` since the version it started at.
    fn scan_configs(
        &self,
        cursor: u64,
    ) -> impl Future<Output = Result<(u64, Vec<ModelConfig>), StoreError>> + Send;

    /// Puts `configs` back into a store that lost them, unless another replica does (or
    /// did): race-safe. `found` is the epoch the caller found (None: none), `min_version`
    /// its snapshot's version.
    fn reseed(
        &self,
        found: Option<&str>,
        configs: Vec<ModelConfig>,
        min_version: u64,
    ) -> impl Future<Output = Result<ReseedOutcome, StoreError>> + Send;

    /// Notified when another replica may have changed configs.
    fn changes(&self) -> Arc<Notify>;

    /// `prepare` of every config, page by page (`all_configs`). A store whose pages must
    /// be parsed parses them, and prepares each, while it reads the next (Redis).
    fn load_configs<T: Send + 'static>(
        &self,
        prepare: Prepare<T>,
    ) -> impl Future<Output = Result<Vec<T>, StoreError>> + Send
    where
        Self: Sync,
    {
        async move { Ok(scan_all(self).await?.into_iter().map(&*prepare).collect()) }
    }
}

/// What a full load makes of each config as soon as it is parsed: a replica compiles it
/// there, so a million parsed configs are never held at once.
pub type Prepare<T> = Arc<dyn Fn(ModelConfig) -> T + Send + Sync>;

/// Every config, page by page (not a consistent cut when writes go on meanwhile: a
/// replica's full load follows it with the change log).
pub async fn all_configs<S: ConfigLog + Sync>(store: &S) -> Result<Vec<ModelConfig>, StoreError> {
    store.load_configs(Arc::new(|c| c)).await
}

/// `ConfigLog::load_configs` by `scan_configs`, one page after the other.
async fn scan_all<S: ConfigLog + ?Sized>(store: &S) -> Result<Vec<ModelConfig>, StoreError> {
    let mut configs = Vec::new();
    let mut cursor = 0;
    loop {
        let (next, page) = store.scan_configs(cursor).await?;
        configs.extend(page);
        if next == 0 {
            return Ok(configs);
        }
        cursor = next;
    }
}

/// Configs as the store keeps them (JSON), parsed; unreadable ones (hand-edited store
/// data) are logged and skipped.
/// Parsed on every CPU when there are many.
pub fn parse_configs<'a>(stored: impl IntoIterator<Item = &'a str>) -> Vec<ModelConfig> {
    parse_configs_with(stored, |c| c)
}

/// `parse_configs`, each config given to `prepare` as soon as it is parsed.
pub fn parse_configs_with<'a, T: Send>(
    stored: impl IntoIterator<Item = &'a str>,
    prepare: impl Fn(ModelConfig) -> T + Sync,
) -> Vec<T> {
    let stored: Vec<&str> = stored.into_iter().collect();
    let mut parsed = crate::parallel::map(stored, |json| parse_config(json).map(&prepare));
    if parsed.iter().all(Option::is_some) {
        return parsed.into_iter().map(|c| c.expect("checked")).collect();
    }
    parsed.retain(Option::is_some);
    parsed.into_iter().flatten().collect()
}

pub fn parse_config(json: &str) -> Option<ModelConfig> {
    match serde_json::from_str::<ModelConfig>(json) {
        Ok(mut c) => {
            c.shrink_to_fit();
            Some(c)
        }
        Err(e) => {
            tracing::error!(error = %e, "skipping an unreadable config in the store");
            None
        }
    }
}

/// Whether a replica is re-seeding the store (configs outlive Redis's data: see
/// docs/redis-topologies.md, "Configs outlive Redis's data").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeding {
    None,
    InProgress,
    /// Its lease ran out: the replica that began it stopped; another may take over.
    Abandoned,
}

/// Where the config plane stands, read in one store call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigState {
    pub epoch: Option<String>,
    pub version: u64,
    /// Every structure of the config plane carries the epoch's marker: nothing was lost
    /// on its own (an eviction, a partial failover).
    pub intact: bool,
    pub seeding: Seeding,
    /// Changes at or below this version may be gone from the log.
    pub floor: u64,
    /// Configs stored. Without an epoch: configs written before epochs existed.
    pub configs: u64,
}

/// The state, and the configs changed after the version asked about.
#[derive(Debug, Clone)]
pub struct ConfigChanges {
    pub state: ConfigState,
    /// In no particular order; `None`: deleted.
    pub changed: Vec<(String, Option<ModelConfig>)>,
    /// The version these changes bring a replica to; below `state.version` when there
    /// are more to read.
    pub through: u64,
}

/// A config write that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub version: u64,
    pub epoch: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReseedOutcome {
    /// This replica's configs are in the store again, under `epoch` at `version`.
    Seeded { epoch: String, version: u64 },
    /// Another replica re-seeds (or did): adopt what the store holds.
    Adopt,
}
