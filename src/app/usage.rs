//! The usage report's decision, shared by `POST /v1/usage` and Envoy's token domains:
//! record a settlement on every matching config, once per request id, and count the
//! outcome in the metrics.

use super::check::matching;
use super::{App, NO_SNAPSHOT, timed};
use crate::limits::{CompiledConfig, MatchKey};
use crate::metrics as m;
use crate::store::{Recorded, Store, StoreError, UsageDelta, UsageOutcome};

/// Records a settlement on every config matching any of `keys` (each once). Counts
/// `tollgate_usage_reports_total`, and announces the thresholds it made a limit reach.
/// Returns the outcome and how many configs matched.
pub async fn record<S: Store>(
    app: &App<S>,
    keys: &[MatchKey<'_>],
    delta: UsageDelta,
    request_id: Option<&str>,
) -> Result<(UsageOutcome, usize), StoreError> {
    let (configs, _) = matching(app, keys);
    let refs: Vec<&CompiledConfig> = configs.iter().map(|c| &**c).collect();
    // Scoped by the report's identity: two tenants' equal ids never collide.
    let scoped_id = request_id
        .zip(keys.first())
        .map(|(id, key)| crate::store::scoped_request_id(key, id));
    let result = if app.snapshot_loaded() {
        timed(
            "usage",
            app.store.record_usage(&refs, delta, scoped_id.as_deref()),
        )
        .await
    } else {
        Err(StoreError::Unavailable(NO_SNAPSHOT.to_string()))
    };
    let label = match &result {
        Ok(Recorded {
            outcome: UsageOutcome::Applied,
            ..
        }) => "applied",
        Ok(Recorded {
            outcome: UsageOutcome::Duplicate,
            ..
        }) => "duplicate",
        Err(_) => "error",
    };
    metrics::counter!(m::USAGE_REPORTS, "outcome" => label).increment(1);
    let recorded = result?;
    super::crossings::announce(app, &configs, &recorded.crossings);
    if recorded.outcome == UsageOutcome::Applied && (delta.tokens < 0 || delta.cost_nanos < 0) {
        // A refund may have made room in a limit that refused.
        app.refusals.forget(&configs);
    }
    Ok((recorded.outcome, refs.len()))
}
