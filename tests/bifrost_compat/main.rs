//! Bifrost's model-config API behaviour, pinned case by case, on both stores.
//! Each case cites where Bifrost does it, in `maximhq/bifrost`:
//! - `transports/bifrost-http/handlers/governance.go` (the handlers),
//! - `transports/bifrost-http/handlers/utils.go` (`SendError`, `ClampPaginationParams`),
//! - `framework/configstore/tables/` (`modelconfig.go`, `budget.go`, `ratelimit.go`,
//!   `utils.go`), and `framework/configstore/clientconfig.go` (the config hashes).
//!
//! Where Bifrost answers 500 for bad input (validation inside its transaction), tollgate
//! answers the 4xx that says what is wrong; those cases say so. One module per concern; a
//! case runs as `<module>::memory::<name>` and `<module>::redis::<name>`.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod requests;
mod updates;
mod views;

use serde_json::Value;

const CONFIGS: &str = "/api/governance/model-configs";

fn path(id: &str) -> String {
    format!("{CONFIGS}/{id}")
}

/// `budgets` of a config view by duration: (id, max_limit, current_usage).
fn budget<'a>(config: &'a Value, duration: &str) -> &'a Value {
    config["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["reset_duration"] == duration)
        .unwrap_or_else(|| panic!("no {duration} budget in {config}"))
}
