//! Giving leases back: what a lease left unspent goes back to the store when the lease
//! ends, at the lease's end (its reservation time: `lua/lease.lua`), and every lease at
//! shutdown. With `--on-store-error` other than `local`, this task also keeps this
//! replica in the registry of replicas alive, which leases are sized by (N).

use super::Due;
use crate::app::App;
use crate::app::local_share::replay::{self, ANNOUNCE_EVERY_MS};
use crate::limits::CompiledConfig;
use crate::log_throttle::LogThrottle;
use crate::metrics as m;
use crate::model::Id;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Gives back ended leases, and (with `announce`) announces this replica, until dropped.
pub async fn run_forever<S: Store>(app: Arc<App<S>>, announce: bool) {
    let tick = Duration::from_millis((app.leases.life_ms as u64 / 4).clamp(10, 250));
    let throttle = LogThrottle::new(10_000);
    let mut last_announce: Option<Instant> = None;
    loop {
        let due_announce =
            last_announce.is_none_or(|at| at.elapsed() >= Duration::from_millis(ANNOUNCE_EVERY_MS));
        if announce && due_announce {
            last_announce = Some(Instant::now());
            if let Err(e) = replay::announce(&app).await
                && let Some(more) = throttle.allow(chrono::Utc::now().timestamp_millis())
            {
                tracing::warn!(error = %e, also_since_last_line = more,
                    "leases: announcing this replica failed");
            }
        }
        give_back(&app, app.leases.due(Instant::now(), false)).await;
        tokio::time::sleep(tick).await;
    }
}

/// Gives back every lease this replica holds (at shutdown).
pub async fn return_all<S: Store>(app: &App<S>) {
    give_back(app, app.leases.due(Instant::now(), true)).await;
}

/// One store call per config and lease end: what each of its limits left unspent. A call
/// that fails leaves that part counted until its window or period lets it go: never
/// admits more, only less.
async fn give_back<S: Store>(app: &App<S>, due: Vec<Due>) {
    if due.is_empty() {
        return;
    }
    let mut calls: HashMap<(Id, i64), (Arc<CompiledConfig>, Vec<i64>)> = HashMap::new();
    for d in due {
        let n = d.config.limits().len();
        let (_, per_limit) = calls
            .entry((d.config.config.id.clone(), d.until_ms))
            .or_insert_with(|| (d.config.clone(), vec![0; n]));
        per_limit[d.limit] += d.left;
    }
    for ((_, until_ms), (config, per_limit)) in calls {
        let call = app.store.return_lease(&config, &per_limit, until_ms);
        match crate::app::timed("lease_return", call).await {
            Ok(()) => {
                for (spec, &left) in config.limits().iter().zip(&per_limit) {
                    if left > 0 {
                        metrics::counter!(m::LEASE_RETURNED, "kind" => spec.kind.as_str())
                            .increment(left as u64);
                    }
                }
            }
            Err(e) => {
                static THROTTLE: LogThrottle = LogThrottle::new(10_000);
                if let Some(more) = THROTTLE.allow(chrono::Utc::now().timestamp_millis()) {
                    tracing::warn!(error = %e, also_since_last_line = more,
                        "leases: giving back an unspent lease failed; it stays counted until its window or period lets it go");
                }
            }
        }
    }
}
