//! Charging the store with what this replica admitted on its own, once it answers again;
//! and the background work that keeps the shares meaningful: the replica registry (`N`)
//! and the periodic read of recently checked limits' usage.

use super::journal::Entry;
use crate::app::App;
use crate::limits::CompiledConfig;
use crate::log_throttle::LogThrottle;
use crate::metrics as m;
use crate::store::{Store, StoreError, UsageOutcome};
use futures_util::future::join_all;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// An announcement counts this long: a replica gone is out of N within it.
pub const ANNOUNCE_TTL_MS: u64 = 10_000;
/// Announced at least this often.
pub(crate) const ANNOUNCE_EVERY_MS: u64 = 2_000;
/// While entries wait, a replay is tried this often.
const REPLAY_EVERY: Duration = Duration::from_millis(250);
/// Entries sent at once (they travel coalesced, as checks do).
const REPLAY_BATCH: usize = 64;
/// Configs read per usage read of the refresh.
const REFRESH_CHUNK: usize = 500;

/// Charges every journaled entry to the store, oldest first, until none is left or the
/// store fails. Each entry goes with its idempotency id, so one sent twice (a lost
/// answer, a restart that reloaded it) is charged once. An entry's configs deleted since
/// are skipped.
pub async fn replay<S: Store>(app: &App<S>) -> Result<(), StoreError> {
    let _one = app.local.replaying.lock().await;
    replay_locked(app).await
}

/// `replay` if none is running; Ok(false) if one is.
pub async fn try_replay<S: Store>(app: &App<S>) -> Result<bool, StoreError> {
    let Ok(_one) = app.local.replaying.try_lock() else {
        return Ok(false);
    };
    replay_locked(app).await.map(|()| true)
}

async fn replay_locked<S: Store>(app: &App<S>) -> Result<(), StoreError> {
    loop {
        let batch = app.local.state.lock().journal.oldest(REPLAY_BATCH);
        if batch.is_empty() {
            app.local.charged();
            return Ok(());
        }
        let snapshot = app.snapshot().clone();
        let results = join_all(batch.iter().map(|e| {
            let configs: Vec<Arc<CompiledConfig>> = e
                .configs
                .iter()
                .filter_map(|id| snapshot.get(id).cloned())
                .collect();
            async move {
                let refs: Vec<&CompiledConfig> = configs.iter().map(|c| &**c).collect();
                let r = crate::app::timed(
                    "replay",
                    app.store.replay(&refs, e.amounts(), e.at_ms, &e.id),
                )
                .await;
                if r.is_ok() {
                    count_as_seen(&configs, e);
                }
                r
            }
        }))
        .await;
        let mut done = HashSet::new();
        let mut failed = None;
        for (e, r) in batch.iter().zip(results) {
            let result = match r {
                Ok(UsageOutcome::Applied) => "applied",
                Ok(UsageOutcome::Duplicate) => "duplicate",
                Err(err) => {
                    failed.get_or_insert(err);
                    "error"
                }
            };
            metrics::counter!(m::LOCAL_REPLAYED, "result" => result).increment(1);
            if result != "error" {
                done.insert(e.id.as_str());
            }
        }
        let left = {
            let mut state = app.local.state.lock();
            state.journal.mark_charged(&done);
            state.journal.uncharged()
        };
        app.local.changed.notify_one();
        if let Some(e) = failed {
            return Err(e);
        }
        if left == 0 {
            app.local.charged();
            return Ok(());
        }
    }
}

/// Whether a check may go to the store: what this replica admitted on its own is charged
/// first (the check waits for it; if another check is charging it, or the store fails,
/// the check is decided here: Err says why), and for `SETTLE_MS` after, while the other
/// replicas charge theirs, checks are still decided here.
pub async fn before_check<S: Store>(app: &App<S>) -> Result<(), String> {
    if app.local.uncharged() > 0 {
        match try_replay(app).await {
            Ok(true) => {}
            Ok(false) => return Err("charging the store with local admissions".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    if app.local.settling() {
        return Err("settling: the replicas charge the store with their local admissions".into());
    }
    Ok(())
}

/// The usage this replica last saw now includes the replayed entry, until the next
/// answer says exactly: a second outage before then does not hand out its share again.
/// (While settling, the entry also still counts as taken: a smaller share, never a
/// larger one.)
fn count_as_seen(configs: &[Arc<CompiledConfig>], e: &Entry) {
    for c in configs {
        for (i, spec) in c.limits().iter().enumerate() {
            if let Some((used, at)) = c.last_seen(i) {
                c.seen()
                    .record(i, used.saturating_add(e.amounts().for_kind(spec.kind)), at);
            }
        }
    }
}

/// Announces this replica in the registry and keeps the count of replicas alive it
/// answers (N, which local shares and leases are sized by).
pub async fn announce<S: Store>(app: &App<S>) -> Result<(), StoreError> {
    let n = app
        .store
        .announce_replica(&app.local.replica_id, ANNOUNCE_TTL_MS)
        .await?;
    app.local.set_replicas(n.max(1));
    Ok(())
}

/// Announces this replica (and counts the replicas alive), replays what waits, and reads
/// back the usage of recently checked limits, until the task is dropped.
pub async fn run_forever<S: Store>(app: Arc<App<S>>) {
    let refresh_ms = app.local.refresh_ms;
    let announce_ms = match refresh_ms {
        0 => ANNOUNCE_EVERY_MS,
        r => r.min(ANNOUNCE_EVERY_MS),
    };
    let throttle = LogThrottle::new(10_000);
    let log = |what: &str, e: &StoreError| {
        if let Some(more) = throttle.allow(chrono::Utc::now().timestamp_millis()) {
            tracing::warn!(error = %e, also_since_last_line = more, "local fallback: {what} failed");
        }
    };
    let mut last_announce = 0i64;
    let mut last_refresh = 0i64;
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        if now - last_announce >= announce_ms as i64 {
            last_announce = now;
            if let Err(e) = announce(&app).await {
                log("announcing this replica", &e);
            }
        }
        if app.local.uncharged() > 0
            && let Err(e) = replay(&app).await
        {
            log("charging the store with local admissions", &e);
        }
        // Ends the settling once due, even without checks.
        app.local.settling();
        if refresh_ms > 0 && now - last_refresh >= refresh_ms as i64 {
            last_refresh = now;
            if let Err(e) = refresh(&app).await {
                log("reading the usage of recent limits", &e);
            }
        }
        tokio::time::sleep(REPLAY_EVERY).await;
    }
}

/// Reads the usage of every config checked here within the last minute, and records it
/// as seen.
async fn refresh<S: Store>(app: &App<S>) -> Result<(), StoreError> {
    let ids = app.local.recent.current();
    if ids.is_empty() || !app.snapshot_loaded() {
        return Ok(());
    }
    let snapshot = app.snapshot().clone();
    let configs: Vec<Arc<CompiledConfig>> = ids
        .iter()
        .filter_map(|id| snapshot.get(id).cloned())
        .collect();
    for chunk in configs.chunks(REFRESH_CHUNK) {
        let refs: Vec<&CompiledConfig> = chunk.iter().map(|c| &**c).collect();
        let (now_ms, usage) = crate::app::timed("refresh", app.store.read_usage(&refs)).await?;
        for (c, limits) in chunk.iter().zip(usage) {
            for (i, u) in limits.iter().enumerate() {
                c.seen().record(i, u.used, now_ms);
            }
        }
    }
    Ok(())
}
