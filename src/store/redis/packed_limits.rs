//! A config's limits as the Lua scripts read them: one binary argument per config, a
//! header `struct.pack('<BB', flags, n)` (flags: 1 = shadow) and its n alert thresholds
//! as doubles, then per limit `struct.pack('<c1Bc0dddd', kind, field, max, length, grid
//! mode, grid param)` (see `lua/lib/counters.lua`). Packed at a config's first script call and kept in its
//! layer cache, so a check only adds its amounts; shared, so a coalesced call carries it
//! without copying.

use crate::limits::period::PeriodGrid;
use crate::limits::{CompiledConfig, LimitKind, LimitSpec};
use std::sync::Arc;

/// The store's slot type in `CompiledConfig::cache`: private, so only this file fills it.
struct PackedLimits(Arc<[u8]>);

/// `config`'s limits, packed (once per compiled config).
#[inline]
pub fn packed_limits(config: &CompiledConfig) -> &Arc<[u8]> {
    &config
        .cache()
        .store()
        .get_or_init(|| PackedLimits(pack(config).into()))
        .0
}

/// The script encoding (mode, param, length) of a budget's period grid, as
/// `lua/lib/periods.lua`'s `period_bounds` reads it: mode 0 fixed from an anchor (param
/// the anchor, in ms), 1 months, 2 years (param n).
pub fn grid_args(grid: PeriodGrid) -> (u8, i64, i64) {
    match grid {
        PeriodGrid::Fixed { anchor_ms, len_ms } => (0, anchor_ms, len_ms),
        PeriodGrid::Months { n } => (1, n, 0),
        PeriodGrid::Years { n } => (2, n, 0),
    }
}

/// The one-letter kind code of the scripts.
fn kind_code(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Requests => "r",
        LimitKind::Tokens => "t",
        LimitKind::Budget => "b",
    }
}

fn pack(config: &CompiledConfig) -> Vec<u8> {
    let limits: &[LimitSpec] = config.limits();
    let mut out = Vec::with_capacity(2 + 8 * config.thresholds.len() + limits.len() * 80);
    out.push(u8::from(config.is_shadow()));
    // At most MAX_THRESHOLDS (8), validated on write.
    out.push(u8::try_from(config.thresholds.len()).unwrap_or(u8::MAX));
    for t in config.thresholds.iter().take(u8::MAX as usize) {
        out.extend_from_slice(&t.to_le_bytes());
    }
    for l in limits {
        let (mode, param) = match l.grid() {
            Some(grid) => {
                let (mode, param, _) = grid_args(grid);
                (mode, param)
            }
            None => (0, 0),
        };
        out.extend_from_slice(kind_code(l.kind).as_bytes());
        // Fields are "r", "t" or "b:<uuid>": far below the 255-byte length prefix.
        out.push(u8::try_from(l.field().len()).expect("limit field under 256 bytes"));
        out.extend_from_slice(l.field().as_bytes());
        for value in [l.max as f64, l.len_ms as f64, f64::from(mode), param as f64] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::create_config;
    use serde_json::json;

    #[test]
    fn packs_each_limit_once_per_compiled_config() {
        let config = create_config(
            serde_json::from_value(json!({
                "model_name": "m",
                "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"},
                "budgets": [{"max_limit": 1.5, "reset_duration": "1d"}]
            }))
            .unwrap(),
            chrono::Utc::now(),
        )
        .unwrap();
        let budget_field = format!("b:{}", config.budgets[0].id);
        // Not calendar-aligned: a grid of days anchored at the budget's creation.
        let anchor = config.budgets[0].created_at.timestamp_millis() as f64;
        let compiled = CompiledConfig::compile(config).unwrap();
        let packed = packed_limits(&compiled).clone();
        assert!(
            Arc::ptr_eq(&packed, packed_limits(&compiled)),
            "packed once"
        );
        // Enforcing, the default thresholds 0.8 and 1.0.
        let mut expected = vec![0u8, 2];
        for t in [0.8f64, 1.0] {
            expected.extend_from_slice(&t.to_le_bytes());
        }
        expected.extend_from_slice(b"r\x01r");
        for v in [5.0f64, 60_000.0, 0.0, 0.0] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        expected.push(b'b');
        expected.push(budget_field.len() as u8);
        expected.extend_from_slice(budget_field.as_bytes());
        for v in [1.5e9f64, 86_400_000.0, 0.0, anchor] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(&packed[..], &expected[..]);
    }
}
