//! Leases (SPEC §12): a config this replica checks often gets part of each of its limits
//! debited in the store ahead of use (`lua/lease.lua`), and spent here with no round trip.
//!
//! Debited first, so a lease never over-admits: the store counts it before any of it is
//! spent, and what is spent from it counts in a window from the lease's end, which is
//! after every admission it made (windows are written at that end). A replica asks only
//! for what its checks spent in the last second over a lease's life, and the store grants
//! no more than `(max − used) / (2N)` of a limit to one replica (`limits::lease`), so near
//! a limit every replica is back to exact per-check calls. A check is answered here only
//! when every limit of every config it matched has a live lease with room, all at once;
//! otherwise it goes to the store as always (asking for leases where they ran out).
//!
//! What a replica holds unspent is shown by `tollgate_lease_held` and given back when the
//! lease ends (`returns`) and at shutdown. A replica that dies strands at most what it
//! held: its windows let it go one window length after the lease's end; a budget's, at the
//! period's end.

pub mod returns;
mod store_check;

pub use self::store_check::store_check;

use crate::limits::lease::lease_ask;
use crate::limits::{CompiledConfig, LimitKind};
use crate::metrics as m;
use crate::metrics_handles::lease_held;
use crate::store::{Amounts, CheckOutcome, Granted, LeaseAsk, LimitOutcome};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Configs followed at most (their rate and leases); past it, new ones are not leased
/// until idle ones are swept.
const MAX_FOLLOWED: usize = 10_000;
/// A lease is taken for ended this long before its end: answers made here never reach it.
const MARGIN: Duration = Duration::from_millis(5);
/// A followed config with no lease, unchecked this long, is forgotten.
const IDLE: Duration = Duration::from_secs(10);

/// This replica's leases and the rates they are sized from.
#[derive(Default)]
pub struct Leases {
    /// `--lease-ms`; 0: off.
    life_ms: i64,
    /// `--lease-min-rate`: checks per second before a config is leased.
    min_rate: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    followed: HashMap<String, Followed>,
    /// Leases of configs no longer followed (a new revision), to give back.
    retired: Vec<Due>,
}

/// One config this replica checks: how often, and its leases per limit.
struct Followed {
    config: Arc<CompiledConfig>,
    second: Instant,
    checks: u64,
    spent: [i64; 3],
    /// The last full second: checks, and amounts spent per kind.
    rate: u64,
    per_second: [i64; 3],
    last_check: Instant,
    slices: Vec<Vec<Slice>>,
}

/// One lease of one limit.
#[derive(Debug, Clone, Copy)]
struct Slice {
    left: i64,
    /// The lease's end on the store's clock: where its windows' amounts were written.
    until_ms: i64,
    /// The lease's end here, less `MARGIN`.
    ends: Instant,
    /// The limit's count after the grant (the lease included), and when it resets.
    used: i64,
    resets: Instant,
}

/// A lease's unspent part, to give back.
#[derive(Debug, Clone)]
pub struct Due {
    pub config: Arc<CompiledConfig>,
    pub limit: usize,
    pub left: i64,
    pub until_ms: i64,
}

impl Followed {
    fn new(config: Arc<CompiledConfig>, now: Instant) -> Self {
        let n = config.limits().len();
        Followed {
            config,
            second: now,
            checks: 0,
            spent: [0; 3],
            rate: 0,
            per_second: [0; 3],
            last_check: now,
            slices: vec![Vec::new(); n],
        }
    }

    fn count(&mut self, amounts: Amounts, now: Instant) {
        let elapsed = now.duration_since(self.second);
        if elapsed >= Duration::from_secs(1) {
            // A gap of more than a second means the rate fell to nothing meanwhile.
            let fresh = elapsed < Duration::from_secs(2);
            self.rate = if fresh { self.checks } else { 0 };
            self.per_second = if fresh { self.spent } else { [0; 3] };
            self.second = now;
            self.checks = 0;
            self.spent = [0; 3];
        }
        self.checks += 1;
        for kind in LimitKind::ALL {
            let spent = &mut self.spent[kind.index()];
            *spent = spent.saturating_add(amounts.for_kind(kind));
        }
        self.last_check = now;
    }

    /// The live lease of limit `i` that can take `amount` (0 needs 1 left: room).
    fn slice_for(&mut self, i: usize, amount: i64, after: Instant) -> Option<&mut Slice> {
        self.slices[i]
            .iter_mut()
            .find(|s| s.ends > after && s.left >= amount.max(1))
    }
}

impl Leases {
    pub fn new(life_ms: u64, min_rate: u64) -> Self {
        Leases {
            life_ms: life_ms as i64,
            min_rate,
            state: Mutex::default(),
        }
    }

    pub fn on(&self) -> bool {
        self.life_ms > 0
    }

    /// Counts a check of `configs` (for the rates leases are sized from) and answers it
    /// here if every limit has a live lease with room for `amounts`: all taken at once.
    pub fn answer(
        &self,
        configs: &[Arc<CompiledConfig>],
        amounts: Amounts,
    ) -> Option<CheckOutcome> {
        let now = Instant::now();
        let mut state = self.state.lock();
        for c in configs {
            state.follow(c, now)?.count(amounts, now);
        }
        let followed = &mut state.followed;
        for c in configs {
            let f = followed.get_mut(c.config.id.as_str())?;
            for (i, spec) in c.limits().iter().enumerate() {
                f.slice_for(i, amounts.for_kind(spec.kind), now)?;
            }
        }
        let mut limits = Vec::with_capacity(configs.iter().map(|c| c.limits().len()).sum());
        let mut until_ms = 0;
        let mut spent = [0i64; 3];
        for c in configs {
            let f = followed.get_mut(c.config.id.as_str()).expect("found above");
            for (i, spec) in c.limits().iter().enumerate() {
                let amount = amounts.for_kind(spec.kind);
                let s = f.slice_for(i, amount, now).expect("found above");
                s.left -= amount;
                until_ms = until_ms.max(s.until_ms);
                spent[spec.kind.index()] += amount;
                limits.push(LimitOutcome {
                    admitted: true,
                    used: s.used - s.left,
                    reset_after_ms: s.resets.saturating_duration_since(now).as_millis() as i64,
                    retry_after_ms: 0,
                });
            }
        }
        drop(state);
        for (kind, spent) in LimitKind::ALL.into_iter().zip(spent) {
            if spent > 0 {
                lease_held(kind).decrement(spent as f64);
            }
        }
        Some(CheckOutcome {
            allowed: true,
            limits,
            // What a settling usage report passes back: the lease's end, where its
            // windows' amounts were written.
            now_ms: until_ms,
            crossings: Vec::new(),
        })
    }

    /// What to ask the store for, with a check of `configs` that could not be answered
    /// here: a lease on each limit whose leases ran out, sized by its rate; nothing
    /// unless every config is checked often enough and the replicas were counted.
    pub fn ask(
        &self,
        configs: &[Arc<CompiledConfig>],
        amounts: Amounts,
        replicas: u64,
    ) -> Option<LeaseAsk> {
        if replicas == 0 {
            return None;
        }
        let now = Instant::now();
        let soon = now + Duration::from_millis(self.life_ms as u64 / 4);
        let mut state = self.state.lock();
        let mut per_limit = Vec::new();
        for c in configs {
            let f = state.followed.get_mut(c.config.id.as_str())?;
            if f.rate < self.min_rate {
                return None;
            }
            for (i, spec) in c.limits().iter().enumerate() {
                let amount = amounts.for_kind(spec.kind);
                let held: i64 = f.slices[i]
                    .iter()
                    .filter(|s| s.ends > now)
                    .map(|s| s.left)
                    .sum();
                let ask = match f.slice_for(i, amount, soon) {
                    Some(_) => 0,
                    None => lease_ask(f.per_second[spec.kind.index()] as f64, self.life_ms),
                };
                per_limit.push([ask, held]);
            }
        }
        per_limit
            .iter()
            .any(|[ask, _]| *ask > 0)
            .then_some(LeaseAsk {
                per_limit,
                replicas: replicas as i64,
                ahead_ms: self.life_ms,
            })
    }

    /// Keeps what the store granted with a check of `amounts` sent at `sent`.
    pub fn take(
        &self,
        configs: &[Arc<CompiledConfig>],
        amounts: Amounts,
        sent: Instant,
        outcome: &CheckOutcome,
        granted: &Granted,
    ) {
        if !outcome.allowed {
            return;
        }
        let mut state = self.state.lock();
        let mut k = 0;
        for c in configs {
            for (i, spec) in c.limits().iter().enumerate() {
                let (g, o) = (granted.per_limit.get(k), outcome.limits.get(k));
                k += 1;
                let (Some(g), Some(o)) = (g, o) else { continue };
                let leased = g.added - amounts.for_kind(spec.kind);
                if g.until_ms <= 0 || leased <= 0 {
                    continue;
                }
                metrics::counter!(m::LEASED, "kind" => spec.kind.as_str()).increment(leased as u64);
                lease_held(spec.kind).increment(leased as f64);
                let slice = Slice {
                    left: leased,
                    until_ms: g.until_ms,
                    ends: (sent + Duration::from_millis(g.life_ms.max(0) as u64))
                        .checked_sub(MARGIN)
                        .unwrap_or(sent),
                    used: o.used,
                    resets: sent + Duration::from_millis(o.reset_after_ms.max(0) as u64),
                };
                match state.followed.get_mut(c.config.id.as_str()) {
                    Some(f) if f.config.config.revision == c.config.revision => {
                        f.slices[i].push(slice)
                    }
                    // Not followed any more (a new revision meanwhile): straight back.
                    _ => state.retired.push(Due {
                        config: c.clone(),
                        limit: i,
                        left: leased,
                        until_ms: g.until_ms,
                    }),
                }
            }
        }
    }

    /// Takes out every lease ended by `now` (or, with `all`, every lease), and what of
    /// it is unspent, to give back; forgets configs idle for a while.
    pub fn due(&self, now: Instant, all: bool) -> Vec<Due> {
        let mut state = self.state.lock();
        let mut due = std::mem::take(&mut state.retired);
        for f in state.followed.values_mut() {
            for (i, slices) in f.slices.iter_mut().enumerate() {
                slices.retain(|s| {
                    let ended = all || s.ends <= now;
                    if ended && s.left > 0 {
                        due.push(Due {
                            config: f.config.clone(),
                            limit: i,
                            left: s.left,
                            until_ms: s.until_ms,
                        });
                    }
                    !ended
                });
            }
        }
        state.followed.retain(|_, f| {
            f.slices.iter().any(|s| !s.is_empty()) || now.duration_since(f.last_check) < IDLE
        });
        for d in &due {
            lease_held(d.config.limits()[d.limit].kind).decrement(d.left as f64);
        }
        due
    }
}

impl State {
    /// The entry of `config`, made if new (if room); a new revision's leases are
    /// retired (given back) and it starts afresh.
    fn follow(&mut self, config: &Arc<CompiledConfig>, now: Instant) -> Option<&mut Followed> {
        let id = config.config.id.as_str();
        let stale = match self.followed.get(id) {
            Some(f) => f.config.config.revision != config.config.revision,
            None if self.followed.len() >= MAX_FOLLOWED => return None,
            None => true,
        };
        if stale {
            let old = self
                .followed
                .insert(id.to_string(), Followed::new(config.clone(), now));
            if let Some(old) = old {
                for (i, slices) in old.slices.into_iter().enumerate() {
                    self.retired
                        .extend(slices.into_iter().filter(|s| s.left > 0).map(|s| Due {
                            config: old.config.clone(),
                            limit: i,
                            left: s.left,
                            until_ms: s.until_ms,
                        }));
                }
            }
        }
        self.followed.get_mut(id)
    }
}

#[cfg(test)]
mod tests;
