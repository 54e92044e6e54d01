//! Pure limit logic: which configs match, and window/period arithmetic.

pub mod compiled;
pub mod matching;
pub mod period;
pub mod seen;
pub mod snapshot;
pub mod thresholds;
pub mod window;

pub use compiled::{CompiledConfig, LimitKind, LimitSpec};
pub use matching::MatchKey;
pub use snapshot::Snapshot;
