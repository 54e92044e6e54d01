//! Threshold events: when a limit's usage reaches a fraction of its max, the replica
//! whose store call decided it emits one event. It is logged (target `tollgate::alert`),
//! counted, and with `--alert-webhook` POSTed there, signed with
//! `--alert-webhook-secret`, and retried with backoff for at least 10 minutes.
//!
//! `event` (the JSON) → `sink` (`AlertSink::emit`, the non-blocking hand-over) →
//! `delivery` (the background loop: bounded concurrency, a delay queue for retries) →
//! `webhook` (one signed POST) with `backoff`, `signature` and `stats` underneath.

mod backoff;
mod delivery;
mod event;
pub mod signature;
mod sink;
mod stats;
mod webhook;

pub use backoff::RetryPolicy;
pub use event::{EVENT_TYPE, Enforcement, ThresholdEvent};
pub use sink::{AlertSink, DeliveryOptions};
pub use stats::AlertStats;
pub use webhook::Webhook;
