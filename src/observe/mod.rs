//! What operators see of tenants, beyond the fixed-label metrics of `crate::metrics`:
//! per-config usage gauges, bounded so that no number of configs can flood `/metrics`.

pub mod usage_gauges;

/// `--usage-metrics` default: configs whose limits are exported as gauges.
pub const DEFAULT_USAGE_METRICS: usize = 1000;
