//! Shared state of one tollgate: its store, its config snapshot, and its settings; and
//! the decisions of the hot path, whatever protocol asked.
//!
//! `check` decides a check and `usage` records a usage report (both over HTTP and
//! Envoy's gRPC); `sync` keeps the snapshot current (and the store's configs alive);
//! `persist` keeps a copy of it in `--state-file` when the store is Redis.

pub mod check;
mod crossings;
pub mod leases;
pub mod local_share;
mod persist;
pub mod refusals;
mod restrictive;
pub mod sync;
pub mod usage;
mod writes;

use crate::limits::Snapshot;
use crate::model::ModelConfig;
use crate::settings::StoreErrorPolicy;
use crate::store::{Store, StoreError, WriteError, Written};
use arc_swap::ArcSwap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Until the first snapshot load, no config is known, so "nothing matches" cannot be
/// concluded: the store has been unreachable since start.
pub const NO_SNAPSHOT: &str =
    "no config snapshot loaded yet: the store has been unreachable since start";

pub struct App<S> {
    pub store: S,
    snapshot: ArcSwap<Snapshot>,
    /// Serializes snapshot swaps so an older load never replaces a newer one.
    swap_lock: tokio::sync::Mutex<()>,
    snapshot_loaded: AtomicBool,
    /// When the snapshot was last confirmed current (`tollgate_config_snapshot_age_seconds`).
    last_confirmed: parking_lot::Mutex<Instant>,
    /// SHA-256 of each management API key: comparing fixed-size digests in constant time
    /// leaks neither the keys nor their lengths.
    pub api_key_digests: Vec<[u8; 32]>,
    pub on_store_error: StoreErrorPolicy,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// `--usage-metrics`: configs whose usage `/metrics` shows (`crate::observe`).
    pub usage_metrics: usize,
    /// Where this replica keeps a copy of its snapshot (Redis store with `--state-file`).
    snapshot_file: Option<PathBuf>,
    /// Poked on every new snapshot, for the state-file writer.
    published: Arc<Notify>,
    /// Where threshold events go (`emit` never waits); log-only until the server sets it.
    pub alerts: Arc<crate::alerts::AlertSink>,
    /// Refusals a check may be answered from without a round trip (`refusals`).
    pub refusals: refusals::Refusals,
    /// `--on-store-error local`: shares, the journal of local admissions, the registry.
    pub local: local_share::LocalShare,
    /// `--lease-ms`: limits debited ahead and spent here (`leases`).
    pub leases: leases::Leases,
    /// This replica's `--configs-file`, as last read valid: the API writes it refuses.
    configs_file: arc_swap::ArcSwapOption<crate::configs_file::managed::ManagedFile>,
}

/// A config change this replica just wrote, applied to its own snapshot at once.
pub enum LocalChange<'a> {
    Upsert(&'a ModelConfig),
    Delete(&'a str),
}

impl<S: Store> App<S> {
    pub fn new(store: S, api_keys: Vec<String>, on_store_error: StoreErrorPolicy) -> Self {
        App {
            store,
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            swap_lock: tokio::sync::Mutex::new(()),
            snapshot_loaded: AtomicBool::new(false),
            last_confirmed: parking_lot::Mutex::new(Instant::now()),
            api_key_digests: api_keys.iter().map(|k| key_digest(k.as_bytes())).collect(),
            on_store_error,
            metrics: crate::metrics::handle(),
            usage_metrics: crate::observe::DEFAULT_USAGE_METRICS,
            snapshot_file: None,
            published: Arc::new(Notify::new()),
            alerts: Arc::default(),
            refusals: refusals::Refusals::new(1000),
            local: local_share::LocalShare::default(),
            leases: leases::Leases::default(),
            configs_file: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Compiles configs with `policy` (`--shadow-all`, `--alert-thresholds`); call before
    /// any snapshot is loaded.
    pub fn with_policy(self, policy: crate::limits::policy::Policy) -> Self {
        self.snapshot
            .store(Arc::new(Snapshot::empty_for(Arc::new(policy))));
        self
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    pub fn snapshot_loaded(&self) -> bool {
        self.snapshot_loaded.load(Ordering::Acquire)
    }

    pub fn snapshot_age(&self) -> Duration {
        self.last_confirmed.lock().elapsed()
    }

    /// The epoch this replica's writes are fenced by.
    pub fn epoch(&self) -> Option<String> {
        self.snapshot().epoch.clone()
    }

    fn publish(&self, snapshot: Snapshot) {
        metrics::gauge!(crate::metrics::CONFIGS).set(snapshot.len() as f64);
        self.snapshot.store(Arc::new(snapshot));
        self.snapshot_loaded.store(true, Ordering::Release);
        self.confirm();
        self.published.notify_one();
    }

    fn confirm(&self) {
        *self.last_confirmed.lock() = Instant::now();
    }

    /// Applies this replica's own write to its snapshot, so its next check sees it. If
    /// other writes happened in between, syncs instead (O(changed)).
    pub async fn apply_local(&self, written: &Written, change: LocalChange<'_>) {
        let guard = self.swap_lock.lock().await;
        let current = self.snapshot();
        if self.snapshot_loaded()
            && written.version == current.version + 1
            && current.epoch.as_deref() == Some(written.epoch.as_str())
        {
            let next = match change {
                LocalChange::Upsert(c) => {
                    current.with_change(written.version, &c.id, Some(c.clone()))
                }
                LocalChange::Delete(id) => current.with_change(written.version, id, None),
            };
            self.publish(next);
            return;
        }
        drop(guard);
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "config written, but the snapshot sync failed; the poll will retry");
        }
    }

    /// Runs a config write fenced by this replica's epoch. If the store's epoch moved
    /// (it lost data, or another replica re-seeded it), syncs (re-seeding if needed)
    /// and tries once more.
    pub async fn fenced_write<F, Fut>(&self, write: F) -> Result<Written, WriteError>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<Written, WriteError>>,
    {
        match write(self.epoch()).await {
            Err(WriteError::EpochChanged) => {
                self.refresh().await?;
                match write(self.epoch()).await {
                    Err(WriteError::EpochChanged) => Err(StoreError::Unavailable(
                        "the store's configs are being restored; retry in a few seconds".into(),
                    )
                    .into()),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Keeps the snapshot current: on every change notification, and every `poll`.
    pub async fn sync_forever(self: Arc<Self>, poll: Duration) {
        let changes = self.store.changes();
        let throttle = crate::log_throttle::LogThrottle::new(10_000);
        loop {
            if let Err(e) = self.refresh().await
                && let Some(more) = throttle.allow(chrono::Utc::now().timestamp_millis())
            {
                tracing::warn!(error = %e, also_since_last_line = more, "config snapshot refresh failed");
            }
            tokio::select! {
                _ = changes.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// Runs a store call, recording its latency and any error under the operation name.
pub async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let start = Instant::now();
    let result = call.await;
    record_store_call(op, start, result.as_ref().err());
    result
}

/// `timed` for config writes: only store failures count as errors (not a conflict).
pub async fn timed_write<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, WriteError>>,
) -> Result<T, WriteError> {
    let start = Instant::now();
    let result = call.await;
    let error = match &result {
        Err(WriteError::Store(e)) => Some(e),
        _ => None,
    };
    record_store_call(op, start, error);
    result
}

fn record_store_call(op: &'static str, start: Instant, error: Option<&StoreError>) {
    crate::metrics_handles::store_duration(op).record(start.elapsed().as_secs_f64());
    if let Some(e) = error {
        metrics::counter!(crate::metrics::STORE_ERRORS, "op" => op, "kind" => e.kind())
            .increment(1);
    }
}

pub fn key_digest(key: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key).into()
}
