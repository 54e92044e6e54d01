//! Flags of leases (SPEC §12): how long a lease lives, and how hot a config must be.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct LeaseSettings {
    /// Leases, on a Redis store: a config checked at least --lease-min-rate times a
    /// second here gets part of its limits debited in Redis ahead of use and spent by
    /// this replica with no round trip, for at most this long, in milliseconds (never
    /// more than (max − used) / (2 × replicas alive) of a limit, never over-admitting;
    /// unspent parts go back when the lease ends and at shutdown; docs/leases.md).
    /// 0: off, every check asks Redis.
    #[arg(long, env = "TOLLGATE_LEASE_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub lease_ms: u64,

    /// With --lease-ms: checks per second a config must get on this replica before its
    /// limits are leased (the rate of the last full second).
    #[arg(long, env = "TOLLGATE_LEASE_MIN_RATE", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub lease_min_rate: u64,
}
