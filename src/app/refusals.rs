//! Refusals answered without a round trip: when the store refuses a check because a limit
//! is full, nothing but time (or a refund, or a change of the config) can make that limit
//! admit the same amount again before the retry time the store computed. So this replica
//! remembers it, and answers a check that asks as much or more of that limit 429 at once,
//! until then, but at most `--remember-refusals-ms` (1 s by default). A tenant hammering
//! a full limit then costs Redis about one call per second per replica.
//!
//! Why a cap: the store's retry time is exact (a budget's period end; a window's time
//! until the amount fits if nothing else is added) but for what only the store sees: a
//! refund made through another replica, a config raised there (this replica forgets a
//! config's refusals when its snapshot gets the new revision, within a second), or, on a
//! cluster, another check's reservation that another shard made it give back. Each can
//! only make this replica refuse a little longer than needed — at most the cap — never
//! admit more than the limit. A refund through this replica forgets the refusals of the
//! configs it touches. Shadow configs never refuse, so they are never remembered.

use crate::limits::CompiledConfig;
use crate::model::Id;
use crate::store::{Amounts, CheckOutcome, LimitOutcome};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// At most this many refusals are remembered; past it, the oldest-expiring go first.
const CAPACITY: usize = 100_000;

/// One limit that refused, until when.
#[derive(Debug, Clone, Copy)]
struct Refused {
    /// The config's revision when it refused: a changed config is checked again.
    revision: u64,
    /// Local Unix ms until which the limit cannot admit `amount`.
    until_ms: i64,
    /// The amount refused; a request asking less might fit (unless the limit is full).
    amount: i64,
    /// `used >= max`: nothing fits, whatever the amount.
    full: bool,
    used: i64,
    /// The store's answer, at local `at_ms`: what a remembered answer says.
    reset_ms: i64,
    retry_ms: i64,
    at_ms: i64,
}

/// This replica's remembered refusals, by (config id, limit position).
#[derive(Debug, Default)]
pub struct Refusals {
    map: Mutex<HashMap<(Id, usize), Refused>>,
    /// Entries held, read without the lock: most checks find none to look at.
    held: AtomicUsize,
    /// The longest a refusal is remembered (0: never).
    cap_ms: i64,
}

fn local_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Refusals {
    pub fn new(cap_ms: u64) -> Self {
        Refusals {
            cap_ms: cap_ms as i64,
            ..Refusals::default()
        }
    }

    /// Remembers the enforcing limits that refused in `outcome` (a check of `amounts`).
    pub fn remember(
        &self,
        configs: &[Arc<CompiledConfig>],
        amounts: Amounts,
        outcome: &CheckOutcome,
    ) {
        if self.cap_ms == 0 || outcome.allowed {
            return;
        }
        let now = local_ms();
        let mut limits = outcome.limits.iter();
        let mut map = self.map.lock();
        for c in configs {
            for (i, spec) in c.limits().iter().enumerate() {
                let Some(o) = limits.next() else { return };
                if c.is_shadow() || o.admitted || o.retry_after_ms <= 0 {
                    continue;
                }
                if map.len() >= CAPACITY {
                    map.retain(|_, r| r.until_ms > now);
                    if map.len() >= CAPACITY {
                        continue;
                    }
                }
                map.insert(
                    (c.config.id.clone(), i),
                    Refused {
                        revision: c.config.revision,
                        until_ms: now + o.retry_after_ms.min(self.cap_ms),
                        amount: amounts.for_kind(spec.kind),
                        full: o.used >= spec.max,
                        used: o.used,
                        reset_ms: o.reset_after_ms,
                        retry_ms: o.retry_after_ms,
                        at_ms: now,
                    },
                );
            }
        }
        self.held.store(map.len(), Ordering::Relaxed);
    }

    /// Forgets every refusal of `configs` (a refund through this replica freed some room).
    pub fn forget(&self, configs: &[Arc<CompiledConfig>]) {
        if self.held.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.map.lock();
        map.retain(|(id, _), _| !configs.iter().any(|c| &c.config.id == id));
        self.held.store(map.len(), Ordering::Relaxed);
    }

    /// The outcome of a check of `amounts` on `configs` if a remembered refusal decides
    /// it: refused, nothing consumed; the other limits as this replica last saw them.
    pub fn answer(
        &self,
        configs: &[Arc<CompiledConfig>],
        amounts: Amounts,
    ) -> Option<CheckOutcome> {
        if self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = local_ms();
        let map = self.map.lock();
        let mut refused_any = false;
        let mut limits = Vec::new();
        for c in configs {
            for (i, spec) in c.limits().iter().enumerate() {
                let seen = c.last_seen(i).map_or(0, |(used, _)| used);
                let still = map.get(&(c.config.id.clone(), i)).filter(|r| {
                    !c.is_shadow()
                        && r.revision == c.config.revision
                        && r.until_ms > now
                        && (r.full || amounts.for_kind(spec.kind) >= r.amount)
                });
                limits.push(match still {
                    Some(r) => {
                        refused_any = true;
                        LimitOutcome {
                            admitted: false,
                            used: r.used,
                            reset_after_ms: r.reset_ms - (now - r.at_ms),
                            retry_after_ms: r.retry_ms - (now - r.at_ms),
                        }
                    }
                    None => LimitOutcome {
                        admitted: true,
                        used: seen,
                        reset_after_ms: 0,
                        retry_after_ms: 0,
                    },
                });
            }
        }
        refused_any.then(|| CheckOutcome {
            allowed: false,
            limits,
            now_ms: now,
            crossings: Vec::new(),
        })
    }
}
