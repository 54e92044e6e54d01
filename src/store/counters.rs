//! The hot path's side of a store: checks, usage reports, and live usage for the
//! management API. Redis: `redis/hot_path.rs`; memory: `memory/counters.rs`.

use super::{Amounts, CheckOutcome, LimitUsage, StoreError, UsageDelta, UsageOutcome};
use crate::limits::CompiledConfig;
use std::future::Future;

pub trait Counters {
    /// Atomic check-and-consume over every limit of `configs`.
    fn check(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        dry_run: bool,
    ) -> impl Future<Output = Result<CheckOutcome, StoreError>> + Send;

    /// Adds a settlement to the token windows and budgets of `configs`, once per request id
    /// (scoped by the report's identity: `scoped_request_id`). With no configs it writes
    /// nothing, not even the request id.
    fn record_usage(
        &self,
        configs: &[&CompiledConfig],
        delta: UsageDelta,
        request_id: Option<&str>,
    ) -> impl Future<Output = Result<UsageOutcome, StoreError>> + Send;

    /// Live usage of every limit of `configs` (in order), and the store's time now.
    fn read_usage(
        &self,
        configs: &[&CompiledConfig],
    ) -> impl Future<Output = Result<(i64, Vec<Vec<LimitUsage>>), StoreError>> + Send;
}
