//! What a replica learns from the store about the config plane: its epoch (one lifetime
//! of the store's data), its version, and the configs changed since a version.

use crate::model::ModelConfig;

/// Whether a replica is re-seeding the store (SPEC §5: configs outlive Redis's data).
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
