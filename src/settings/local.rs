//! Flags of `--on-store-error local`: how much a replica may keep of what it admitted on
//! its own, and how fresh it keeps the usage its share is computed from.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct LocalSettings {
    /// With --on-store-error local: at most this many checks admitted by this replica on
    /// its own are kept until Redis answers again (each is charged to Redis then,
    /// exactly once). When full, further checks are refused while Redis does not answer
    /// (tollgate_local_decisions_total{decision="journal_full"}): nothing admitted is
    /// ever left uncharged. About 200 bytes each.
    #[arg(long, env = "TOLLGATE_LOCAL_JOURNAL_MAX", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub local_journal_max: u64,

    /// With --on-store-error local: how often, in milliseconds, this replica reads the
    /// usage of the limits it checked in the last minute (one read per 500 configs), so
    /// that its share reflects what other replicas consumed; also how often it announces
    /// itself in Redis (at least every 2 s). 0: never reads (shares then come from this
    /// replica's own check answers alone).
    #[arg(long, env = "TOLLGATE_LOCAL_REFRESH_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub local_refresh_ms: u64,
}
