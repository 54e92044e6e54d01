//! tollgate: a distributed rate-limit and budget sidecar for LLM gateways.
//!
//! `api` (HTTP handlers and Envoy's gRPC service: parse, format) → `app` (state, config
//! snapshot, and the check and usage decisions) → `store` (Redis or memory), with
//! `limits` (matching, window and period math) and `model` (config types and
//! validation) as plain logic underneath. Arrows point down only. `alerts` delivers
//! threshold events (logged, counted, POSTed to the alert webhook); `observe` renders
//! per-tenant usage for `/metrics`.

pub mod alerts;
pub mod api;
pub mod app;
pub mod cli;
pub mod configs_file;
pub mod limits;
pub mod log_throttle;
pub mod metrics;
pub mod metrics_handles;
pub mod model;
pub mod observe;
pub mod parallel;
pub mod server;
pub mod settings;
pub mod state_file;
pub mod store;

pub use server::{Running, run, start};
pub use settings::Settings;
