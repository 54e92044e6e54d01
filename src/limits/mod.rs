//! Pure limit logic: which configs match, and window/period arithmetic. No wire
//! formats: the store and the API encode limits themselves, once per compiled config,
//! in its `layer_cache`.

pub mod compiled;
mod config_keys;
mod filling;
pub mod layer_cache;
pub mod lease;
pub mod matching;
pub mod period;
pub mod policy;
pub mod seen;
pub mod snapshot;
pub mod thresholds;
pub mod window;

pub use compiled::{CompiledConfig, LimitKind, LimitSpec};
pub use matching::MatchKey;
pub use snapshot::Snapshot;
