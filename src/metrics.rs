//! Prometheus metrics. Labels only take fixed values (enums): models, providers, keys,
//! users and request ids are unbounded and stay out. The one exception is the bounded
//! per-config usage gauges (`crate::observe::usage_gauges`), whose labels are config
//! fields written by operators, for at most `--usage-metrics` configs.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const CHECKS: &str = "tollgate_checks_total";
pub const CHECK_DURATION: &str = "tollgate_check_duration_seconds";
pub const USAGE_REPORTS: &str = "tollgate_usage_reports_total";
pub const STORE_ERRORS: &str = "tollgate_store_errors_total";
pub const STORE_DURATION: &str = "tollgate_store_duration_seconds";
pub const STORE_FALLBACKS: &str = "tollgate_store_fallbacks_total";
pub const CONFIGS: &str = "tollgate_configs";
pub const SNAPSHOT_AGE: &str = "tollgate_config_snapshot_age_seconds";
pub const SNAPSHOT_RELOADS: &str = "tollgate_config_reloads_total";
pub const HTTP_REQUESTS: &str = "tollgate_http_requests_total";
pub const CONFIG_SYNCS: &str = "tollgate_config_syncs_total";
pub const CONFIG_CHANGES_APPLIED: &str = "tollgate_config_changes_applied_total";
pub const STORE_DATA_LOSS: &str = "tollgate_store_data_loss_total";
pub const CONFIG_RESEEDS: &str = "tollgate_config_reseeds_total";
pub const STORE_WRITABLE: &str = "tollgate_store_writable";
pub const RLS_REQUESTS: &str = "tollgate_rls_requests_total";
pub const REDIS_MASTER_SWITCHES: &str = "tollgate_redis_master_switches_total";
pub const STORE_BATCH_SIZE: &str = "tollgate_store_batch_size";
pub const STORE_GIVE_BACKS: &str = "tollgate_store_give_backs_total";
pub const CLUSTER_COMPENSATIONS: &str = "tollgate_cluster_compensations_total";
pub const SHADOW_DENIALS: &str = "tollgate_shadow_denials_total";
pub const REFUSALS_REMEMBERED: &str = "tollgate_refusals_remembered_total";
pub const LOCAL_DECISIONS: &str = "tollgate_local_decisions_total";
pub const LOCAL_REPLAYED: &str = "tollgate_local_replayed_total";
pub const LOCAL_JOURNAL_ENTRIES: &str = "tollgate_local_journal_entries";
pub const REPLICAS_SEEN: &str = "tollgate_replicas_seen";
pub const LEASE_CHECKS: &str = "tollgate_lease_checks_total";
pub const LEASED: &str = "tollgate_leased_total";
pub const LEASE_RETURNED: &str = "tollgate_lease_returned_total";
pub const LEASE_HELD: &str = "tollgate_lease_held";
pub const REDIS_WAIT_SHORTFALLS: &str = "tollgate_redis_wait_shortfalls_total";
pub const REDIS_WAIT_SHORT: &str = "tollgate_redis_wait_short";
pub const THRESHOLD_CROSSINGS: &str = "tollgate_threshold_crossings_total";
pub const ALERT_DELIVERIES: &str = "tollgate_alert_deliveries_total";
pub const ALERT_QUEUE: &str = "tollgate_alert_queue";
pub const CONFIGS_FILE_OK: &str = "tollgate_configs_file_ok";
pub const CONFIGS_FILE_RECONCILES: &str = "tollgate_configs_file_reconciles_total";
pub const CONFIGS_FILE_WRITES: &str = "tollgate_configs_file_writes_total";
pub const LIMIT_USED: &str = "tollgate_limit_used";
pub const LIMIT_MAX: &str = "tollgate_limit_max";

/// Help of the usage gauges, which `crate::observe::usage_gauges` writes at scrape time.
pub const LIMIT_USED_HELP: &str = "--usage-metrics: usage of each limit of the configs with the highest usage ratio, as this replica last saw it (budgets in dollars).";
pub const LIMIT_MAX_HELP: &str =
    "--usage-metrics: the max of each limit of tollgate_limit_used (budgets in dollars).";

/// Every metric tollgate exposes (histograms add `_bucket`, `_sum` and `_count`).
pub const ALL: &[&str] = &[
    CHECKS,
    CHECK_DURATION,
    USAGE_REPORTS,
    STORE_ERRORS,
    STORE_DURATION,
    STORE_FALLBACKS,
    CONFIGS,
    SNAPSHOT_AGE,
    SNAPSHOT_RELOADS,
    HTTP_REQUESTS,
    CONFIG_SYNCS,
    CONFIG_CHANGES_APPLIED,
    STORE_DATA_LOSS,
    CONFIG_RESEEDS,
    STORE_WRITABLE,
    RLS_REQUESTS,
    REDIS_MASTER_SWITCHES,
    STORE_BATCH_SIZE,
    STORE_GIVE_BACKS,
    CLUSTER_COMPENSATIONS,
    REDIS_WAIT_SHORTFALLS,
    REDIS_WAIT_SHORT,
    SHADOW_DENIALS,
    REFUSALS_REMEMBERED,
    LOCAL_DECISIONS,
    LOCAL_REPLAYED,
    LOCAL_JOURNAL_ENTRIES,
    REPLICAS_SEEN,
    LEASE_CHECKS,
    LEASED,
    LEASE_RETURNED,
    LEASE_HELD,
    THRESHOLD_CROSSINGS,
    ALERT_DELIVERIES,
    ALERT_QUEUE,
    CONFIGS_FILE_OK,
    CONFIGS_FILE_RECONCILES,
    CONFIGS_FILE_WRITES,
    LIMIT_USED,
    LIMIT_MAX,
];

/// Seconds; fine enough for sub-millisecond checks, wide enough for timeouts.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Ops per coalesced script call (at most `store::redis::MAX_BATCH`).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// The process-wide recorder (metrics macros are global), installed on first use.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are not empty")
                .set_buckets_for_metric(Matcher::Full(STORE_BATCH_SIZE.into()), BATCH_BUCKETS)
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe();
            zero_counters();
            handle
        })
        .clone()
}

/// Counters that alerting rules watch for any increase exist from the start at 0:
/// `increase()` cannot see a series that first appears at 1, so a single data loss or
/// fallback would otherwise never alert.
fn zero_counters() {
    metrics::counter!(STORE_DATA_LOSS).increment(0);
    for policy in ["allow", "deny", "local"] {
        metrics::counter!(STORE_FALLBACKS, "policy" => policy).increment(0);
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        CHECKS,
        "Checks answered, by decision (allowed|denied) and reason."
    );
    describe_histogram!(
        CHECK_DURATION,
        Unit::Seconds,
        "Time to decide a check (POST /v1/check or Envoy ShouldRateLimit)."
    );
    describe_counter!(
        USAGE_REPORTS,
        "Usage reports, by outcome (applied|duplicate|error)."
    );
    describe_counter!(
        STORE_ERRORS,
        "Failed store calls, by operation and kind (unavailable|timeout|corrupt)."
    );
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "Store call latency, by operation."
    );
    describe_counter!(
        STORE_FALLBACKS,
        "Checks answered by --on-store-error because the store failed, by policy."
    );
    describe_gauge!(CONFIGS, "Model configs in this replica's snapshot.");
    describe_gauge!(
        SNAPSHOT_AGE,
        Unit::Seconds,
        "Time since this replica last confirmed its config snapshot is current."
    );
    describe_counter!(
        SNAPSHOT_RELOADS,
        "Config snapshot reloads, by result (ok|error)."
    );
    describe_histogram!(
        STORE_BATCH_SIZE,
        "Checks and usage reports carried by one coalesced Redis script call."
    );
    describe_counter!(
        STORE_GIVE_BACKS,
        "Checks answered by --on-store-error that Redis had run and charged, given back."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests, by route template and status code."
    );
    describe_counter!(
        CONFIG_SYNCS,
        "Config syncs that found something to do, by kind (incremental|full|wait)."
    );
    describe_counter!(
        CONFIG_CHANGES_APPLIED,
        "Configs changed by other replicas and applied incrementally from the change log."
    );
    describe_counter!(
        STORE_DATA_LOSS,
        "Times the store was found to have lost configs (epoch marker gone or changed, version rolled back)."
    );
    describe_counter!(
        CONFIG_RESEEDS,
        "Re-seeds of a store that lost configs, by result (seeded|adopted)."
    );
    describe_gauge!(
        STORE_WRITABLE,
        "1 while the store accepts writes, 0 while it rejects them (OOM, read-only, MISCONF) or evicts configs."
    );
    describe_counter!(
        REDIS_MASTER_SWITCHES,
        "Times this replica moved to a new Redis master named by the sentinels (failovers)."
    );
    describe_counter!(
        RLS_REQUESTS,
        "Envoy ShouldRateLimit calls, by answer (ok|over_limit|invalid_argument|unavailable)."
    );
    describe_counter!(
        REFUSALS_REMEMBERED,
        "Checks answered 429 without a store call: a limit that refused them still refuses until its retry time."
    );
    describe_counter!(
        LOCAL_DECISIONS,
        "--on-store-error local: checks decided by this replica against its share while the store failed, by decision."
    );
    describe_counter!(
        LOCAL_REPLAYED,
        "--on-store-error local: local admissions charged to the store once it answered again, by result."
    );
    describe_gauge!(
        LOCAL_JOURNAL_ENTRIES,
        "--on-store-error local: local admissions not yet charged to the store."
    );
    describe_gauge!(
        REPLICAS_SEEN,
        "--on-store-error local: replicas alive when the store last answered this replica's announcement (N)."
    );
    describe_counter!(
        LEASE_CHECKS,
        "--lease-ms: checks by where they were answered (local: from this replica's leases, no store call | store)."
    );
    describe_counter!(
        LEASED,
        "--lease-ms: amounts debited in the store ahead of use as leases to this replica, by kind (requests|tokens|budget, nano-dollars)."
    );
    describe_counter!(
        LEASE_RETURNED,
        "--lease-ms: unspent lease amounts given back to the store when their lease ended or at shutdown, by kind."
    );
    describe_gauge!(
        LEASE_HELD,
        "--lease-ms: lease amounts this replica holds unspent now, by kind: what it would strand if it died now."
    );
    describe_counter!(
        SHADOW_DENIALS,
        "Limits of shadow configs that would have refused a check (it was not refused by them), by kind."
    );
    describe_counter!(
        REDIS_WAIT_SHORTFALLS,
        "--redis-wait-replicas: checks and usage reports answered although fewer replicas than asked confirmed their write (kept counted on the master)."
    );
    describe_gauge!(
        REDIS_WAIT_SHORT,
        "--redis-wait-replicas: 1 while the master's replicas do not confirm writes (WAIT falls short), else 0."
    );
    describe_counter!(
        THRESHOLD_CROSSINGS,
        "Threshold events this replica emitted (each logged), by kind (requests|tokens|budget)."
    );
    describe_counter!(
        ALERT_DELIVERIES,
        "Alert webhook deliveries, by result (delivered|retried|dropped); retried counts attempts after a failed one."
    );
    describe_gauge!(
        ALERT_QUEUE,
        "Threshold events held for the alert webhook: queued, being sent, or waiting to retry."
    );
    // Written at scrape time by crate::observe::usage_gauges, not through this recorder.
    describe_gauge!(LIMIT_USED, LIMIT_USED_HELP);
    describe_gauge!(LIMIT_MAX, LIMIT_MAX_HELP);
    describe_counter!(
        CLUSTER_COMPENSATIONS,
        "Redis Cluster: checks denied on one shard whose reservations on other shards were given back."
    );
    describe_gauge!(
        CONFIGS_FILE_OK,
        "--configs-file: 1 while the file last read is valid, 0 while it is invalid or unreadable (the configs stay as they were)."
    );
    describe_counter!(
        CONFIGS_FILE_RECONCILES,
        "--configs-file: reconciles of the store to the file, by result (ok|invalid|error)."
    );
    describe_counter!(
        CONFIGS_FILE_WRITES,
        "--configs-file: config writes this replica made to match the file, by op (create|update|delete|release)."
    );
}
