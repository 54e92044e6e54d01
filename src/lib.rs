//! tollgate: a distributed rate-limit and budget sidecar for LLM gateways.

pub mod limits;
pub mod model;
pub mod store;
