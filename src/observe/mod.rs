//! What operators see of tenants, beyond the fixed-label metrics of `crate::metrics`:
//! per-config usage gauges, bounded so that no number of configs can flood `/metrics`.

pub mod usage_gauges;

use crate::limits::Snapshot;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// `--usage-metrics` default: configs whose limits are exported as gauges.
pub const DEFAULT_USAGE_METRICS: usize = 1000;

/// The text of `GET /metrics`: the exporter's metrics, then the usage gauges of the
/// `usage_metrics` fullest configs of `snapshot`. Ranking a large snapshot takes
/// milliseconds (`benches/usage_metrics.rs`), so it runs on the blocking pool, never on
/// a worker that answers checks.
pub async fn scrape(
    handle: PrometheusHandle,
    snapshot: Arc<Snapshot>,
    usage_metrics: usize,
) -> String {
    let render = move || {
        let mut text = handle.render();
        let now_ms = chrono::Utc::now().timestamp_millis();
        usage_gauges::append(&mut text, &snapshot, usage_metrics, now_ms);
        text
    };
    match tokio::task::spawn_blocking(render).await {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            String::new()
        }
    }
}
