//! The behaviour suite: every scenario runs against the memory store and against a real
//! Redis (started by the test), through the HTTP API. One module per concern; a scenario
//! runs as `<module>::memory::<name>` and `<module>::redis::<name>`.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod checks;
mod configs;
mod errors;
mod listing;
mod updates;
mod usage;
mod windows;

use serde_json::{Value, json};

const CONFIGS: &str = "/api/governance/model-configs";

fn limited(requests: u64, window: &str) -> Value {
    json!({"request_max_limit": requests, "request_reset_duration": window})
}
