//! A config update's new budgets, seeded in the embedded store (as
//! `lua/lib/counter_updates.lua` does in Redis).

use super::counters::ConfigCounters;
use crate::store::BudgetSeed;

/// New budgets start with their source budget's usage in its current period (added to
/// whatever they hold, so nothing counted is lost).
pub(super) fn seed_budgets(c: &mut ConfigCounters, seeds: &[BudgetSeed], now: i64) {
    if c.expires_ms <= now {
        return;
    }
    for seed in seeds {
        let (Some(source_grid), Some(target_grid)) = (seed.source.grid(), seed.target.grid())
        else {
            continue;
        };
        let Some(mut source) = c.budgets.get(seed.source.field()).copied() else {
            continue;
        };
        source.roll(&source_grid, now);
        if source.used() > 0 {
            let target = c.budgets.slot(seed.target.field());
            target.roll(&target_grid, now);
            target.add(source.used());
        }
    }
}
