//! The embedded store's counters (`store::Counters`): the same window and period
//! arithmetic as the Lua scripts (`src/limits/`), under one lock, so each check is
//! atomic.

use super::fields::Fields;
use super::{MemoryStore, now_ms};
use crate::limits::period::BudgetCounter;
use crate::limits::thresholds::{self, Fired};
use crate::limits::window::{SlidingWindow, admits};
use crate::limits::{CompiledConfig, LimitKind, LimitSpec};
use crate::model::Id;
use crate::store::{
    self, Amounts, CheckOutcome, Crossing, LimitOutcome, LimitUsage, Recorded, StoreError,
    USAGE_ID_TTL, UsageDelta, UsageOutcome,
};
use rustc_hash::FxHashMap;
use std::collections::HashMap;

/// How often expired counters and request ids are swept out.
pub(super) const SWEEP_EVERY_MS: i64 = 10_000;

#[derive(Debug, Default)]
pub(super) struct ConfigCounters {
    pub(super) windows: Fields<SlidingWindow>,
    pub(super) budgets: Fields<BudgetCounter>,
    /// Per limit field: the highest alert threshold it fired, and (budgets) the period
    /// it fired in (see `limits::thresholds`).
    pub(super) fired: Fields<(i64, Fired)>,
    /// Like a Redis TTL: after this nothing in here counts any more.
    pub(super) expires_ms: i64,
}

/// After an op raised limit `spec` (at position `pos` of the op) to `used`: the
/// thresholds of `config` it reached, once per budget period or window length, as the
/// scripts decide them (`lua/lib/alerts.lua`).
fn rise(
    c: &mut ConfigCounters,
    config: &CompiledConfig,
    spec: &LimitSpec,
    (pos, used, now): (usize, i64, i64),
    period_start: Option<i64>,
    out: &mut Vec<Crossing>,
) {
    if config.thresholds.is_empty() {
        return;
    }
    let (start, fired) = c.fired.get(spec.field()).copied().unwrap_or_default();
    let fired = match period_start {
        Some(p) if start != p => Fired::default(),
        Some(_) => fired,
        None => fired.in_window(now, spec.len_ms),
    };
    let (hits, next) = thresholds::reached(&config.thresholds, fired, used, spec.max, now);
    for threshold in hits {
        out.push(Crossing {
            limit: pos,
            threshold,
            used,
            period_start_ms: period_start,
            at_ms: now,
        });
    }
    *c.fired.slot(spec.field()) = (period_start.unwrap_or(0), next);
}

/// `map`'s entry for `key`, created on first use: the key is copied then, not on every
/// check (the embedded store's check allocated a copy of each name per limit).
pub(super) fn slot<'a, K, V, H>(map: &'a mut HashMap<K, V, H>, key: &str) -> &'a mut V
where
    K: std::borrow::Borrow<str> + for<'k> From<&'k str> + std::hash::Hash + Eq,
    V: Default,
    H: std::hash::BuildHasher,
{
    if !map.contains_key(key) {
        map.insert(K::from(key), V::default());
    }
    map.get_mut(key).expect("present")
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Keyed by ids this replica's stores wrote: a fast hash (FxHash) is safe here; the
    /// request ids of `usage_ids` come from clients and keep SipHash.
    pub(super) by_config: FxHashMap<Id, ConfigCounters>,
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
        match spec.grid() {
            None => {
                let w = c.windows.slot(spec.field());
                w.evict(now, spec.len_ms);
                Counter::Window(w)
            }
            Some(grid) => {
                let b = c.budgets.slot(spec.field());
                let period = b.roll(&grid, now);
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

/// How long a config's counters matter after a write: its longest window or period.
fn lifetime_ms(config: &CompiledConfig, now: i64) -> i64 {
    config
        .limits()
        .iter()
        .map(|s| match s.grid() {
            None => s.len_ms,
            Some(g) => g.bounds(now).1 - now,
        })
        .max()
        .unwrap_or(0)
        + 1000
}

impl store::Counters for MemoryStore {
    /// Every check here is in process already: nothing to lease.
    async fn check_leasing(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        _ask: &store::LeaseAsk,
    ) -> Result<(CheckOutcome, store::Granted), StoreError> {
        let n = configs.iter().map(|c| c.limits().len()).sum();
        Ok((
            self.check(configs, amounts, false).await?,
            store::Granted::none(n),
        ))
    }

    async fn return_lease(&self, _: &CompiledConfig, _: &[i64], _: i64) -> Result<(), StoreError> {
        Ok(())
    }

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
        let mut allowed = true;
        for config in configs {
            let c = slot(&mut counters.by_config, &config.config.id);
            if c.expires_ms <= now {
                *c = ConfigCounters::default();
            }
            for spec in config.limits() {
                let counter = Counter::open(c, spec, now);
                let ok = admits(counter.used(), spec.max, amounts.for_kind(spec.kind));
                // A shadow config's limits never refuse.
                allowed &= ok || config.is_shadow();
                admitted.push(ok);
            }
        }
        let mut limits = Vec::with_capacity(admitted.len());
        let mut crossings = Vec::new();
        let mut admitted = admitted.into_iter();
        for config in configs {
            let c = counters
                .by_config
                .get_mut(&config.config.id)
                .expect("opened above");
            let mut wrote = false;
            for spec in config.limits() {
                let ok = admitted.next().expect("one per limit");
                let amount = amounts.for_kind(spec.kind);
                let consume = allowed && !dry_run && amount > 0;
                wrote |= consume;
                let pos = limits.len();
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
                if consume {
                    let start = spec.grid().map(|g| g.bounds(now).0);
                    let at = (pos, outcome.used, now);
                    rise(c, config, spec, at, start, &mut crossings);
                }
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
            crossings,
        })
    }

    async fn record_usage(
        &self,
        configs: &[&CompiledConfig],
        delta: UsageDelta,
        request_id: Option<&str>,
    ) -> Result<Recorded, StoreError> {
        if configs.is_empty() {
            return Ok(Recorded::plain(UsageOutcome::Applied));
        }
        let now = now_ms();
        let mut counters = self.counters.lock();
        Self::sweep(&mut counters, now);
        if let Some(id) = request_id {
            match counters.usage_ids.get(id) {
                Some(&expires) if expires > now => {
                    return Ok(Recorded::plain(UsageOutcome::Duplicate));
                }
                _ => {
                    counters
                        .usage_ids
                        .insert(id.to_string(), now + USAGE_ID_TTL.as_millis() as i64);
                }
            }
        }
        let mut crossings = Vec::new();
        let mut pos = 0;
        for config in configs {
            let c = slot(&mut counters.by_config, &config.config.id);
            if c.expires_ms <= now {
                *c = ConfigCounters::default();
            }
            let mut wrote = false;
            for spec in config.limits() {
                pos += 1;
                let d = match spec.kind {
                    LimitKind::Requests => continue,
                    LimitKind::Tokens => delta.tokens,
                    LimitKind::Budget => delta.cost_nanos,
                };
                if d == 0 {
                    continue;
                }
                wrote = true;
                let mut counter = Counter::open(c, spec, now);
                match &mut counter {
                    Counter::Window(w) if d > 0 => w.add(now, d),
                    Counter::Window(w) => w.refund(-d, delta.reserved_at_ms),
                    // A refund of a reservation made in an earlier period has nothing
                    // left to return.
                    Counter::Budget(b, (start, _))
                        if d > 0 || delta.reserved_at_ms.is_none_or(|at| at >= *start) =>
                    {
                        b.add(d)
                    }
                    Counter::Budget(..) => {}
                }
                if d > 0 {
                    let used = counter.used();
                    let start = spec.grid().map(|g| g.bounds(now).0);
                    rise(c, config, spec, (pos - 1, used, now), start, &mut crossings);
                }
            }
            if wrote {
                c.expires_ms = c.expires_ms.max(now + lifetime_ms(config, now));
            }
        }
        Ok(Recorded {
            outcome: UsageOutcome::Applied,
            crossings,
        })
    }

    /// The embedded store never fails a check, so nothing is ever admitted by a replica
    /// on its own against it and this is never called; should it be, the amounts are
    /// charged now (a window or period later than reserved: counted, never lost).
    async fn replay(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        _at_local_ms: i64,
        id: &str,
    ) -> Result<UsageOutcome, StoreError> {
        let now = now_ms();
        let mut counters = self.counters.lock();
        if counters.usage_ids.get(id).is_some_and(|&e| e > now) {
            return Ok(UsageOutcome::Duplicate);
        }
        counters
            .usage_ids
            .insert(id.to_string(), now + USAGE_ID_TTL.as_millis() as i64);
        for config in configs {
            let c = counters
                .by_config
                .entry(config.config.id.clone())
                .or_default();
            for spec in config.limits() {
                let d = amounts.for_kind(spec.kind);
                match &mut Counter::open(c, spec, now) {
                    Counter::Window(w) => w.add(now, d),
                    Counter::Budget(b, _) => b.add(d),
                }
            }
            c.expires_ms = c.expires_ms.max(now + lifetime_ms(config, now));
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
                        .limits()
                        .iter()
                        .map(|s| LimitUsage {
                            used: 0,
                            start_ms: match s.grid() {
                                None => now - s.len_ms,
                                Some(g) => g.bounds(now).0,
                            },
                        })
                        .collect();
                };
                config
                    .limits()
                    .iter()
                    .map(|spec| {
                        let used = Counter::open(c, spec, now).used();
                        let start_ms = match spec.grid() {
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
