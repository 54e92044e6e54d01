//! Threshold crossings the store decided, turned into events for the alert sink. The
//! store names each crossing by a limit's position and a threshold's position; here they
//! become the config's and limit's names, the threshold's value, and a stable event id.

use super::App;
use crate::limits::{CompiledConfig, LimitSpec};
use crate::store::{Crossing, Store};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Hands each crossing of `crossings` (positions into `configs`' limits) to the sink.
pub(super) fn announce<S: Store>(
    app: &App<S>,
    configs: &[Arc<CompiledConfig>],
    crossings: &[Crossing],
) {
    for x in crossings {
        let Some((config, limit)) = limit_at(configs, x.limit) else {
            tracing::warn!(limit = x.limit, "a threshold crossing of no limit; ignored");
            continue;
        };
        let Some(&threshold) = config.thresholds.get(x.threshold) else {
            tracing::warn!(
                threshold = x.threshold,
                "a crossing of no threshold; ignored"
            );
            continue;
        };
        app.alerts.emit(event(config, limit, threshold, x));
    }
}

/// The config and limit at position `at` among `configs`' limits, in order.
fn limit_at(
    configs: &[Arc<CompiledConfig>],
    mut at: usize,
) -> Option<(&CompiledConfig, &LimitSpec)> {
    for c in configs {
        if at < c.limits().len() {
            return Some((c, &c.limits()[at]));
        }
        at -= c.limits().len();
    }
    None
}

/// The event of one crossing. Its id is a hash of what makes the crossing unique (the
/// config, the limit, the threshold, and the budget period or the window's firing
/// time), so any retry or duplicate carries the same id.
fn event(
    config: &CompiledConfig,
    limit: &LimitSpec,
    threshold: f64,
    x: &Crossing,
) -> crate::alerts::ThresholdEvent {
    let c = &config.config;
    let when = x.period_start_ms.unwrap_or(x.at_ms);
    let id = Sha256::digest(format!("{}|{}|{threshold}|{when}", c.id, limit.field()));
    let event_id = id[..16].iter().map(|b| format!("{b:02x}")).collect();
    crate::alerts::ThresholdEvent {
        event_id,
        at: chrono::DateTime::from_timestamp_millis(x.at_ms).unwrap_or_default(),
        config_id: c.id.to_string(),
        model_name: c.model_name.to_string(),
        provider: c.provider.as_deref().map(str::to_owned),
        scope: c.scope,
        scope_id: c.scope_id.as_deref().map(str::to_owned),
        enforcement: config.enforcement,
        kind: limit.kind,
        reset_duration: config.reset_duration(limit).to_string(),
        threshold,
        used: x.used,
        max: limit.max,
        period_start: x
            .period_start_ms
            .and_then(chrono::DateTime::from_timestamp_millis),
    }
}
