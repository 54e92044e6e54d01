//! Config types, their validation, and the duration grammar.

pub mod config;
pub mod duration;
pub mod hash;
pub mod id;
pub mod json_int;
pub mod schema;
pub mod timestamp;
pub mod validate;

pub use config::{ModelConfig, Scope};
pub use id::Id;

/// Budgets are counted in nano-dollars: integer arithmetic, so 0.1 + 0.2 fits a 0.3 budget.
pub const NANOS_PER_DOLLAR: f64 = 1e9;

pub fn dollars_to_nanos(dollars: f64) -> i64 {
    (dollars * NANOS_PER_DOLLAR).round() as i64
}

pub fn nanos_to_dollars(nanos: i64) -> f64 {
    nanos as f64 / NANOS_PER_DOLLAR
}
