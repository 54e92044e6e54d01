//! The hot path's side of a store: checks, usage reports, and live usage for the
//! management API. Redis: `redis/hot_path.rs`; memory: `memory/counters.rs`.

use super::{
    Amounts, CheckOutcome, Granted, LeaseAsk, LimitUsage, Recorded, StoreError, UsageDelta,
    UsageOutcome,
};
use crate::limits::CompiledConfig;
use std::future::Future;

pub trait Counters {
    /// Atomic check-and-consume over every limit of `configs`: every limit of an
    /// enforcing config admits, or nothing is consumed (a shadow config's limits never
    /// refuse; they are consumed from like the others).
    fn check(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        dry_run: bool,
    ) -> impl Future<Output = Result<CheckOutcome, StoreError>> + Send;

    /// `check` that, when every limit that asks can be leased (`ask.per_limit`), also
    /// debits those leases, all at once (`lua/lease.lua`); `Granted` says what each
    /// limit got. A store where checks cost no round trip (memory) only checks.
    fn check_leasing(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        ask: &LeaseAsk,
    ) -> impl Future<Output = Result<(CheckOutcome, Granted), StoreError>> + Send;

    /// Gives back `per_limit` (per limit of `config`) of a lease that ends at `until_ms`
    /// (the store's clock): what it debited there and this replica did not spend.
    fn return_lease(
        &self,
        config: &CompiledConfig,
        per_limit: &[i64],
        until_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds a settlement to the token windows and budgets of `configs`, once per request id
    /// (scoped by the report's identity: `scoped_request_id`). With no configs it writes
    /// nothing, not even the request id.
    fn record_usage(
        &self,
        configs: &[&CompiledConfig],
        delta: UsageDelta,
        request_id: Option<&str>,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send;

    /// Charges `amounts` (requests, tokens, nano-dollars) that this replica admitted by
    /// itself while the store did not answer (`--on-store-error local`) to every limit
    /// of `configs`, as at `at_local_ms` (this replica's clock when it admitted them):
    /// to the budget period and window that time fell in. Applied once per `id`, however
    /// often it is retried. Never denies.
    fn replay(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        at_local_ms: i64,
        id: &str,
    ) -> impl Future<Output = Result<UsageOutcome, StoreError>> + Send;

    /// Live usage of every limit of `configs` (in order), and the store's time now.
    fn read_usage(
        &self,
        configs: &[&CompiledConfig],
    ) -> impl Future<Output = Result<(i64, Vec<Vec<LimitUsage>>), StoreError>> + Send;
}
