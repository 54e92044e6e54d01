//! The check decision, shared by `POST /v1/check` and Envoy's `ShouldRateLimit`: match
//! the configs, ask the store once, decide (or fall back by `--on-store-error`), and
//! count the decision in the metrics. The handlers only parse the request and format
//! the answer.

pub use super::restrictive::{most_restrictive, most_restrictive_among, most_restrictive_of};
use super::{App, NO_SNAPSHOT, timed};
use crate::limits::{CompiledConfig, LimitSpec, MatchKey};
use crate::log_throttle::LogThrottle;
use crate::metrics as m;
use crate::settings::StoreErrorPolicy;
use crate::store::{Amounts, CheckOutcome, LimitOutcome, Store};
use std::sync::Arc;
use std::time::Instant;

/// A check the store answered.
pub struct Checked {
    /// Every config that applied, each once (a config matched by several keys is
    /// checked, and consumed from, once).
    pub configs: Vec<Arc<CompiledConfig>>,
    /// For each match key, the positions of its configs in `configs`.
    pub per_key: Vec<Vec<usize>>,
    pub outcome: CheckOutcome,
    /// The most restrictive limit (a position in `pairs()`), see [`most_restrictive`].
    pub deciding: Option<usize>,
    pub reason: Option<&'static str>,
    /// When denied: how long until every refusing limit would admit.
    pub retry_after_ms: Option<i64>,
    /// Positions in `pairs()` of the limits of shadow configs that refused: they never
    /// deny, the answer lists them in `shadow_denied`.
    pub shadow_denied: Vec<usize>,
    /// Positions in `pairs()` of the limits of enforcing configs: what headers describe.
    pub enforced: Vec<usize>,
}

impl Checked {
    /// Every limit of every config with its outcome, in the store's order.
    pub fn pairs(&self) -> Vec<(&LimitSpec, LimitOutcome)> {
        self.configs
            .iter()
            .flat_map(|c| c.limits().iter())
            .zip(self.outcome.limits.iter().copied())
            .collect()
    }

    /// Positions in `pairs()` of the limits of key `k`'s enforcing configs.
    pub fn limits_of_key(&self, k: usize) -> Vec<usize> {
        let starts = self.starts();
        self.per_key[k]
            .iter()
            .filter(|&&c| !self.configs[c].is_shadow())
            .flat_map(|&c| starts[c]..starts[c] + self.configs[c].limits().len())
            .collect()
    }

    /// Where each config's limits start in `pairs()`.
    fn starts(&self) -> Vec<usize> {
        let mut starts = Vec::with_capacity(self.configs.len());
        let mut at = 0;
        for c in &self.configs {
            starts.push(at);
            at += c.limits().len();
        }
        starts
    }
}

/// Positions, among `configs`' limits in order, of those of enforcing configs.
fn enforced_positions(configs: &[Arc<CompiledConfig>]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    for c in configs {
        if !c.is_shadow() {
            out.extend(at..at + c.limits().len());
        }
        at += c.limits().len();
    }
    out
}

pub enum Decision {
    /// No matching config has a limit: allowed.
    Unlimited,
    /// The store failed (or no config snapshot yet): `--on-store-error` decided.
    StoreFailed {
        allowed: bool,
        policy: StoreErrorPolicy,
        error: String,
        /// Why it was refused: `store_unavailable`, or with `local` the kind of the limit
        /// whose share had no room (`request_limited`, …).
        reason: &'static str,
    },
    Checked(Checked),
}

/// One check over the configs matching any of `keys`: all-or-nothing across all of
/// them (if any limit refuses, nothing is consumed), in one store call. Records `tollgate_checks_total` and the check latency
/// from `started`.
pub async fn decide<S: Store>(
    app: &App<S>,
    started: Instant,
    keys: &[MatchKey<'_>],
    amounts: Amounts,
    dry_run: bool,
) -> Decision {
    if !app.snapshot_loaded() {
        return store_failed(app, started, NO_SNAPSHOT.to_string(), None);
    }
    let (configs, per_key) = matching(app, keys);
    if configs.iter().all(|c| c.limits().is_empty()) {
        record_check(started, true, None);
        return Decision::Unlimited;
    }
    // A limit that refused a moment ago still refuses: no round trip (`refusals`).
    if let Some(outcome) = app.refusals.answer(&configs, amounts) {
        metrics::counter!(m::REFUSALS_REMEMBERED).increment(1);
        return conclude(started, configs, per_key, outcome, true);
    }
    let local = app.on_store_error == StoreErrorPolicy::Local;
    // What this replica admitted on its own goes to the store before any new check does
    // (`local_share::replay::before_check`).
    if local
        && app.local.held() > 0
        && let Err(why) = super::local_share::replay::before_check(app).await
    {
        return store_failed(app, started, why, Some((&configs, amounts, dry_run)));
    }
    // Every limit leased here with room: no round trip (`leases`).
    let leasing = !dry_run && app.leases.on();
    if leasing && let Some(outcome) = app.leases.answer(&configs, amounts) {
        crate::metrics_handles::lease_checks(true).increment(1);
        return conclude(started, configs, per_key, outcome, false);
    }
    let asked = timed(
        "check",
        super::leases::store_check(app, &configs, amounts, dry_run),
    );
    let outcome = match asked.await {
        Ok(o) => o,
        Err(e) => {
            return store_failed(
                app,
                started,
                e.to_string(),
                Some((&configs, amounts, dry_run)),
            );
        }
    };
    remember_usage(&configs, &outcome);
    if local {
        app.local.touch(&configs);
    }
    app.refusals.remember(&configs, amounts, &outcome);
    if !dry_run {
        super::crossings::announce(app, &configs, &outcome.crossings);
    }
    conclude(started, configs, per_key, outcome, dry_run)
}

/// The decision from the store's (or a remembered) outcome: the deciding limit, the
/// reason, the retry time, the shadow limits that would have refused, the metrics.
fn conclude(
    started: Instant,
    configs: Vec<Arc<CompiledConfig>>,
    per_key: Vec<Vec<usize>>,
    outcome: CheckOutcome,
    dry_run: bool,
) -> Decision {
    let mut checked = Checked {
        configs,
        per_key,
        outcome,
        deciding: None,
        reason: None,
        retry_after_ms: None,
        shadow_denied: Vec::new(),
        enforced: Vec::new(),
    };
    let pairs = checked.pairs();
    let allowed = checked.outcome.allowed;
    // Shadow configs never decide: the reason, the retry time and the headers come from
    // the enforcing configs' limits alone.
    let enforced = enforced_positions(&checked.configs);
    let deciding = most_restrictive_among(&pairs, &enforced);
    let reason = (!allowed)
        .then(|| deciding.map(|i| pairs[i].0.kind.denial_reason()))
        .flatten();
    let retry_after_ms = (!allowed).then(|| {
        enforced
            .iter()
            .map(|&i| pairs[i].1)
            .filter(|o| !o.admitted)
            .map(|o| o.retry_after_ms)
            .max()
            .unwrap_or(0)
    });
    let shadow_denied: Vec<usize> = (0..pairs.len())
        .filter(|i| !pairs[*i].1.admitted && !enforced.contains(i))
        .collect();
    if !dry_run {
        for &i in &shadow_denied {
            metrics::counter!(m::SHADOW_DENIALS, "kind" => pairs[i].0.kind.as_str()).increment(1);
        }
    }
    drop(pairs);
    record_check(started, allowed, reason);
    checked.deciding = deciding;
    checked.reason = reason;
    checked.retry_after_ms = retry_after_ms;
    checked.shadow_denied = shadow_denied;
    checked.enforced = enforced;
    Decision::Checked(checked)
}

/// What the check saw of each limit, for `from_memory=true` lists.
fn remember_usage(configs: &[Arc<CompiledConfig>], outcome: &CheckOutcome) {
    let mut limits = outcome.limits.iter();
    for c in configs {
        for i in 0..c.limits().len() {
            if let Some(o) = limits.next() {
                c.seen().record(i, o.used, outcome.now_ms);
            }
        }
    }
}

/// The configs matching any of `keys`, each once, and which of them each key matched.
pub fn matching<S: Store>(
    app: &App<S>,
    keys: &[MatchKey<'_>],
) -> (Vec<Arc<CompiledConfig>>, Vec<Vec<usize>>) {
    let snapshot = app.snapshot();
    let mut configs: Vec<Arc<CompiledConfig>> = Vec::new();
    let mut per_key = Vec::with_capacity(keys.len());
    for key in keys {
        let mut mine = Vec::new();
        for c in snapshot.matching(key) {
            let pos = match configs.iter().position(|x| Arc::ptr_eq(x, c)) {
                Some(p) => p,
                None => {
                    configs.push(c.clone());
                    configs.len() - 1
                }
            };
            if !mine.contains(&pos) {
                mine.push(pos);
            }
        }
        per_key.push(mine);
    }
    (configs, per_key)
}

fn record_check(started: Instant, allowed: bool, reason: Option<&'static str>) {
    crate::metrics_handles::checks(allowed, reason.unwrap_or("none")).increment(1);
    crate::metrics_handles::check_duration().record(started.elapsed().as_secs_f64());
}

/// What a local decision needs: the matching configs, the amounts, whether a dry run.
type Asked<'a> = Option<(&'a [Arc<CompiledConfig>], Amounts, bool)>;

/// The store failed: decide by policy (`local`: against this replica's shares of the
/// `asked` configs' limits; with no config snapshot yet, nothing is known: refused),
/// count it, and log it (throttled).
fn store_failed<S: Store>(
    app: &App<S>,
    started: Instant,
    error: String,
    asked: Asked<'_>,
) -> Decision {
    let policy = app.on_store_error;
    metrics::counter!(m::STORE_FALLBACKS, "policy" => policy.as_str()).increment(1);
    static THROTTLE: LogThrottle = LogThrottle::new(1_000);
    if let Some(more) = THROTTLE.allow(chrono::Utc::now().timestamp_millis()) {
        tracing::warn!(%error, policy = policy.as_str(), also_since_last_line = more,
            "store failed during check; answering by policy");
    }
    let (allowed, reason) = match (policy, asked) {
        (StoreErrorPolicy::Allow, _) => (true, "store_unavailable"),
        (StoreErrorPolicy::Deny, _) | (StoreErrorPolicy::Local, None) => {
            (false, "store_unavailable")
        }
        (StoreErrorPolicy::Local, Some((configs, amounts, dry_run))) => {
            use super::local_share::Verdict;
            match app.local.decide(configs, amounts, dry_run) {
                Verdict::Admitted => (true, "store_unavailable"),
                Verdict::Refused(kind) => (false, kind.denial_reason()),
                Verdict::JournalFull | Verdict::NoReplicaCount => (false, "store_unavailable"),
            }
        }
    };
    // The metric says why for every policy: an allowed check that no limit decided is
    // not the same as one that passed them.
    record_check(
        started,
        allowed,
        Some(if allowed { "store_unavailable" } else { reason }),
    );
    Decision::StoreFailed {
        allowed,
        policy,
        error,
        reason,
    }
}
