//! The embedded store's counters (`store::Counters`): the same window and period
//! arithmetic as the Lua scripts (`src/limits/`), under one lock, so each check is
//! atomic.

use super::{MemoryStore, now_ms};
use crate::limits::period::BudgetCounter;
use crate::limits::window::{SlidingWindow, admits};
use crate::limits::{CompiledConfig, LimitKind, LimitSpec};
use crate::store::{
    self, Amounts, BudgetSeed, CheckOutcome, LimitOutcome, LimitUsage, StoreError, USAGE_ID_TTL,
    UsageDelta, UsageOutcome,
};
use std::collections::HashMap;

/// How often expired counters and request ids are swept out.
pub(super) const SWEEP_EVERY_MS: i64 = 10_000;

#[derive(Debug, Default)]
pub(super) struct ConfigCounters {
    pub(super) windows: HashMap<String, SlidingWindow>,
    pub(super) budgets: HashMap<String, BudgetCounter>,
    /// Like a Redis TTL: after this nothing in here counts any more.
    pub(super) expires_ms: i64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) by_config: HashMap<String, ConfigCounters>,
    pub(super) usage_ids: HashMap<String, i64>,
    pub(super) next_sweep_ms: i64,
}

impl MemoryStore {
    fn sweep(counters: &mut Counters, now: i64) {
        if now < counters.next_sweep_ms {
            return;
        }
        counters.next_sweep_ms = now + SWEEP_EVERY_MS;
        counters.by_config.retain(|_, c| c.expires_ms > now);
        counters.usage_ids.retain(|_, expires| *expires > now);
    }
}

/// One limit's counter, brought up to `now`; the period's (start, end) for budgets.
enum Counter<'a> {
    Window(&'a mut SlidingWindow),
    Budget(&'a mut BudgetCounter, (i64, i64)),
}

impl Counter<'_> {
    fn open<'a>(c: &'a mut ConfigCounters, spec: &LimitSpec, now: i64) -> Counter<'a> {
        match &spec.grid {
            None => {
                let w = c.windows.entry(spec.field.clone()).or_default();
                w.evict(now, spec.len_ms);
                Counter::Window(w)
            }
            Some(grid) => {
                let b = c.budgets.entry(spec.field.clone()).or_default();
                let period = b.roll(grid, now);
                Counter::Budget(b, period)
            }
        }
    }

    fn used(&self) -> i64 {
        match self {
            Counter::Window(w) => w.used(),
            Counter::Budget(b, _) => b.used(),
        }
    }
}

/// New budgets start with their source budget's usage in its current period (added to
/// whatever they hold, so nothing counted is lost).
pub(super) fn seed_budgets(c: &mut ConfigCounters, seeds: &[BudgetSeed], now: i64) {
    if c.expires_ms <= now {
        return;
    }
    for seed in seeds {
        let (Some(source_grid), Some(target_grid)) = (&seed.source.grid, &seed.target.grid) else {
            continue;
        };
        let Some(mut source) = c.budgets.get(&seed.source.field).copied() else {
            continue;
        };
        source.roll(source_grid, now);
        if source.used() > 0 {
            let target = c.budgets.entry(seed.target.field.clone()).or_default();
            target.roll(target_grid, now);
            target.add(source.used());
        }
    }
}

/// How long a config's counters matter after a write: its longest window or period.
fn lifetime_ms(config: &CompiledConfig, now: i64) -> i64 {
    config
        .limits
        .iter()
        .map(|s| match &s.grid {
            None => s.len_ms,
            Some(g) => g.bounds(now).1 - now,
        })
        .max()
        .unwrap_or(0)
        + 1000
}

impl store::Counters for MemoryStore {
    async fn check(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        dry_run: bool,
    ) -> Result<CheckOutcome, StoreError> {
        let now = now_ms();
        let mut counters = self.counters.lock();
        Self::sweep(&mut counters, now);
        let mut admitted = Vec::new();
        for config in configs {
            let c = counters
                .by_config
                .entry(config.config.id.clone())
                .or_default();
            if c.expires_ms <= now {
                *c = ConfigCounters::default();
            }
            for spec in &config.limits {
                let counter = Counter::open(c, spec, now);
                admitted.push(admits(
                    counter.used(),
                    spec.max,
                    amounts.for_kind(spec.kind),
                ));
            }
        }
        let allowed = admitted.iter().all(|&ok| ok);
        let mut limits = Vec::with_capacity(admitted.len());
        let mut admitted = admitted.into_iter();
        for config in configs {
            let c = counters
                .by_config
                .get_mut(&config.config.id)
                .expect("opened above");
            let mut wrote = false;
            for spec in &config.limits {
                let ok = admitted.next().expect("one per limit");
                let amount = amounts.for_kind(spec.kind);
                let consume = allowed && !dry_run && amount > 0;
                wrote |= consume;
                let outcome = match Counter::open(c, spec, now) {
                    Counter::Window(w) => {
                        if consume {
                            w.add(now, amount);
                        }
                        LimitOutcome {
                            admitted: ok,
                            used: w.used(),
                            reset_after_ms: w.reset_after_ms(now, spec.len_ms),
                            retry_after_ms: if ok {
                                0
                            } else {
                                w.retry_after_ms(now, spec.len_ms, spec.max, amount)
                            },
                        }
                    }
                    Counter::Budget(b, (_, end)) => {
                        if consume {
                            b.add(amount);
                        }
                        LimitOutcome {
                            admitted: ok,
                            used: b.used(),
                            reset_after_ms: end - now,
                            retry_after_ms: if ok { 0 } else { end - now },
                        }
                    }
                };
                limits.push(outcome);
            }
            if wrote {
                c.expires_ms = c.expires_ms.max(now + lifetime_ms(config, now));
            }
        }
        Ok(CheckOutcome {
            allowed,
            limits,
            now_ms: now,
        })
    }

    async fn record_usage(
        &self,
        configs: &[&CompiledConfig],
        delta: UsageDelta,
        request_id: Option<&str>,
    ) -> Result<UsageOutcome, StoreError> {
        if configs.is_empty() {
            return Ok(UsageOutcome::Applied);
        }
        let now = now_ms();
        let mut counters = self.counters.lock();
        Self::sweep(&mut counters, now);
        if let Some(id) = request_id {
            match counters.usage_ids.get(id) {
                Some(&expires) if expires > now => return Ok(UsageOutcome::Duplicate),
                _ => {
                    counters
                        .usage_ids
                        .insert(id.to_string(), now + USAGE_ID_TTL.as_millis() as i64);
                }
            }
        }
        for config in configs {
            let c = counters
                .by_config
                .entry(config.config.id.clone())
                .or_default();
            if c.expires_ms <= now {
                *c = ConfigCounters::default();
            }
            let mut wrote = false;
            for spec in &config.limits {
                let d = match spec.kind {
                    LimitKind::Requests => continue,
                    LimitKind::Tokens => delta.tokens,
                    LimitKind::Budget => delta.cost_nanos,
                };
                if d == 0 {
                    continue;
                }
                wrote = true;
                match Counter::open(c, spec, now) {
                    Counter::Window(w) if d > 0 => w.add(now, d),
                    Counter::Window(w) => w.refund(-d, delta.reserved_at_ms),
                    // A refund of a reservation made in an earlier period has nothing
                    // left to return.
                    Counter::Budget(b, (start, _))
                        if d > 0 || delta.reserved_at_ms.is_none_or(|at| at >= start) =>
                    {
                        b.add(d)
                    }
                    Counter::Budget(..) => {}
                }
            }
            if wrote {
                c.expires_ms = c.expires_ms.max(now + lifetime_ms(config, now));
            }
        }
        Ok(UsageOutcome::Applied)
    }

    async fn read_usage(
        &self,
        configs: &[&CompiledConfig],
    ) -> Result<(i64, Vec<Vec<LimitUsage>>), StoreError> {
        let now = now_ms();
        let mut counters = self.counters.lock();
        let out = configs
            .iter()
            .map(|config| {
                let Some(c) = counters
                    .by_config
                    .get_mut(&config.config.id)
                    .filter(|c| c.expires_ms > now)
                else {
                    return config
                        .limits
                        .iter()
                        .map(|s| LimitUsage {
                            used: 0,
                            start_ms: match &s.grid {
                                None => now - s.len_ms,
                                Some(g) => g.bounds(now).0,
                            },
                        })
                        .collect();
                };
                config
                    .limits
                    .iter()
                    .map(|spec| {
                        let used = Counter::open(c, spec, now).used();
                        let start_ms = match &spec.grid {
                            None => now - spec.len_ms,
                            Some(g) => g.bounds(now).0,
                        };
                        LimitUsage { used, start_ms }
                    })
                    .collect()
            })
            .collect();
        Ok((now, out))
    }
}
