//! Checks and usage reports on Redis Cluster: an op whose configs sit in
//! several hash slots runs as one `batch.lua` call per slot, in parallel.
//!
//! Why per slot, not per node: Redis refuses a script whose declared keys span slots
//! (`CROSSSLOT`, even with `#!lua flags=allow-cross-slot-keys` on 7.0.15, which only
//! lets a script touch undeclared keys of other local slots); undeclared keys would not
//! be redirected during a slot migration. So each slot has its own `Batcher`: one call
//! in flight per slot, coalescing what arrives meanwhile; calls for different slots of
//! one node travel on the same multiplexed connection.
//!
//! Each slot's call is all-or-nothing on its own. A check denied by one slot while other
//! slots admitted (and consumed) has those reservations given back, by their reservation
//! time, before it is answered: never over-admitted; a concurrent check that saw the
//! reservation before the give-back may be denied (counted in
//! `tollgate_cluster_compensations_total`). A check that failed on any slot (timeout,
//! error) is given back wherever it consumed, as a fallback-answered check is.
//! Usage reports carry a marker per slot (see `keys::usage_markers`), so a retried
//! report is applied exactly once on every slot, including one that failed part-way.

use super::super::batching::Batcher;
use super::super::clock::ClockOffset;
use super::super::connection::Master;
use super::super::ops::{LeaseParts, Op, OpAnswer, OpKind};
use super::super::scripts::{BATCH, Lua};
use super::slot::key_slot;
use crate::metrics as m;
use crate::store::{
    CheckOutcome, Crossing, Granted, LimitGrant, Recorded, StoreError, UsageOutcome,
};
use futures_util::future::join_all;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Shards {
    /// The cluster connection (`Master::install_cluster`).
    master: Arc<Master>,
    clock: Arc<ClockOffset>,
    call_timeout: Duration,
    /// One per slot used so far (each an idle task when unused).
    batchers: Mutex<HashMap<u16, Arc<Batcher>>>,
}

/// The part of an op that goes to one slot, and where its configs sat in the op.
struct Part {
    slot: u16,
    op: Op,
    positions: Vec<usize>,
}

impl Shards {
    pub(crate) fn new(
        master: Arc<Master>,
        clock: Arc<ClockOffset>,
        call_timeout: Duration,
    ) -> Self {
        Shards {
            master,
            clock,
            call_timeout,
            batchers: Mutex::new(HashMap::new()),
        }
    }

    fn batcher(&self, slot: u16) -> Arc<Batcher> {
        self.batchers
            .lock()
            .entry(slot)
            .or_insert_with(|| {
                Arc::new(Batcher::start(
                    self.master.clone(),
                    Lua::new(BATCH),
                    String::new(),
                    self.call_timeout,
                    self.clock.clone(),
                ))
            })
            .clone()
    }

    /// Runs `op` (its deadline set) on every slot it touches; `timeout` bounds the wait
    /// for each slot's answer.
    pub(crate) async fn run(&self, op: Op, timeout: Duration) -> Result<OpAnswer, StoreError> {
        let parts = split(op);
        if let [part] = parts.as_slice() {
            return self.batcher(part.slot).run(part.op.clone(), timeout).await;
        }
        let answers = join_all(
            parts
                .iter()
                .map(|p| async { self.batcher(p.slot).run(p.op.clone(), timeout).await }),
        )
        .await;
        let kind = parts[0].op.kind;
        // Slots where this check consumed: each to give back if the check is not allowed.
        let consumed: Vec<(u16, Op)> = parts
            .iter()
            .zip(&answers)
            .filter_map(|(p, a)| Some((p.slot, p.op.undo(a.as_ref().ok()?)?)))
            .collect();
        let failed = answers.iter().find_map(|a| match a {
            Err(e) => Some(e.clone()),
            Ok(OpAnswer::Late) => Some(StoreError::Timeout(timeout)),
            Ok(_) => None,
        });
        if let Some(e) = failed {
            self.give_back(consumed, timeout).await;
            return Err(e);
        }
        let answers: Vec<OpAnswer> = answers.into_iter().map(|a| a.expect("checked")).collect();
        match kind {
            OpKind::Check | OpKind::DryRun | OpKind::Lease => {
                let merged = merge_checks(&parts, &answers)?;
                if !merged.allowed && !consumed.is_empty() {
                    metrics::counter!(m::CLUSTER_COMPENSATIONS).increment(1);
                    self.give_back(consumed, timeout).await;
                }
                if kind != OpKind::Lease {
                    return Ok(OpAnswer::Check(merged));
                }
                // A slot that leased keeps its lease although another did not: the
                // replica holds it per limit, and returns it when it ends.
                let granted = if merged.allowed {
                    merge_grants(&parts, &answers)
                } else {
                    Granted::none(merged.limits.len())
                };
                Ok(OpAnswer::Leased(merged, granted))
            }
            OpKind::Usage | OpKind::Replay => {
                let mut merged = Recorded::plain(UsageOutcome::Duplicate);
                for (part, answer) in parts.iter().zip(&answers) {
                    if let OpAnswer::Usage(r) = answer {
                        if r.outcome == UsageOutcome::Applied {
                            merged.outcome = UsageOutcome::Applied;
                        }
                        merged.crossings.extend(in_op(part, &parts, &r.crossings));
                    }
                }
                Ok(OpAnswer::Usage(merged))
            }
            OpKind::GiveBack | OpKind::LeaseReturn => Ok(OpAnswer::GaveBack),
        }
    }

    /// Gives back what a check consumed on each slot of `consumed`, and waits for it: the
    /// check is answered only after.
    async fn give_back(&self, consumed: Vec<(u16, Op)>, timeout: Duration) {
        let runs = consumed
            .into_iter()
            .map(|(slot, op)| async move { self.batcher(slot).run(op, timeout).await });
        for result in join_all(runs).await {
            if let Err(e) = result {
                metrics::counter!(m::STORE_ERRORS, "op" => "give_back", "kind" => e.kind())
                    .increment(1);
                tracing::warn!(error = %e, "could not give back a cross-shard reservation");
            }
        }
    }
}

/// The op's configs grouped by slot, in order of first appearance (a lease's values
/// per limit go with their configs).
fn split(op: Op) -> Vec<Part> {
    let width = op.kind.per_limit_width();
    let template = Op {
        configs: Vec::new(),
        lease: op.lease.as_ref().map(|l| LeaseParts {
            per_limit: Vec::new(),
            ..l.clone()
        }),
        ..op.clone()
    };
    let mut parts: Vec<Part> = Vec::new();
    let mut at = 0;
    for (i, config) in op.configs.iter().enumerate() {
        let slot = key_slot(config.key.as_bytes());
        let part = match parts.iter().position(|p| p.slot == slot) {
            Some(k) => &mut parts[k],
            None => {
                parts.push(Part {
                    slot,
                    op: template.clone(),
                    positions: Vec::new(),
                });
                parts.last_mut().expect("pushed")
            }
        };
        part.op.configs.push(config.clone());
        part.positions.push(i);
        let n = width * config.n_limits;
        if let (Some(mine), Some(all)) = (part.op.lease.as_mut(), op.lease.as_ref()) {
            mine.per_limit
                .extend_from_slice(all.per_limit.get(at..at + n).unwrap_or_default());
        }
        at += n;
    }
    parts
}

/// Each limit's grant back in the op's order (none where a slot did not lease).
fn merge_grants(parts: &[Part], answers: &[OpAnswer]) -> Granted {
    let grants: Vec<&[LimitGrant]> = answers
        .iter()
        .map(|a| match a {
            OpAnswer::Leased(_, g) => g.per_limit.as_slice(),
            _ => &[],
        })
        .collect();
    Granted {
        per_limit: in_op_order(parts, &grants),
    }
}

/// Per-limit values of each part (`per_part[k]` for `parts[k]`, in its configs' order)
/// back in the op's order of configs; a part short of values gets defaults.
fn in_op_order<T: Clone + Default>(parts: &[Part], per_part: &[&[T]]) -> Vec<T> {
    let n_configs: usize = parts.iter().map(|p| p.positions.len()).sum();
    let mut per_config = vec![Vec::new(); n_configs];
    for (part, values) in parts.iter().zip(per_part) {
        let mut values = values.iter().cloned();
        for (&pos, config) in part.positions.iter().zip(&part.op.configs) {
            per_config[pos] = (0..config.n_limits)
                .map(|_| values.next().unwrap_or_default())
                .collect();
        }
    }
    per_config.into_iter().flatten().collect()
}

/// `crossings` of `part`, their limits renumbered from the part's configs to the op's.
fn in_op<'a>(
    part: &'a Part,
    parts: &'a [Part],
    crossings: &'a [Crossing],
) -> impl Iterator<Item = Crossing> + 'a {
    // Limits of each config of the op, by the op's order of configs.
    let mut n_limits = vec![0; parts.iter().map(|p| p.positions.len()).sum()];
    for p in parts {
        for (&pos, c) in p.positions.iter().zip(&p.op.configs) {
            n_limits[pos] = c.n_limits;
        }
    }
    let op_start = move |pos: usize| n_limits[..pos].iter().sum::<usize>();
    crossings.iter().filter_map(move |x| {
        let mut at = x.limit;
        for (&pos, c) in part.positions.iter().zip(&part.op.configs) {
            if at < c.n_limits {
                return Some(Crossing {
                    limit: op_start(pos) + at,
                    ..*x
                });
            }
            at -= c.n_limits;
        }
        None
    })
}

/// One check's answer from its slots' answers: allowed only if every slot allowed; each
/// limit's outcome back in the op's order.
fn merge_checks(parts: &[Part], answers: &[OpAnswer]) -> Result<CheckOutcome, StoreError> {
    let mut allowed = true;
    let mut now_ms = 0;
    let mut outcomes = Vec::with_capacity(answers.len());
    for answer in answers {
        let (OpAnswer::Check(outcome) | OpAnswer::Leased(outcome, _)) = answer else {
            return Err(super::super::decode::corrupt(format_args!(
                "a check answered {answer:?}"
            )));
        };
        allowed &= outcome.allowed;
        now_ms = now_ms.max(outcome.now_ms);
        outcomes.push(outcome.limits.as_slice());
    }
    // A slot that admitted a check another slot refused crossed its thresholds with a
    // reservation that is then given back: still announced (the level stays reached, so
    // the crossing would never fire again), at the moment the usage reached it.
    let crossings = parts
        .iter()
        .zip(answers)
        .flat_map(|(part, answer)| match answer {
            OpAnswer::Check(o) | OpAnswer::Leased(o, _) => {
                in_op(part, parts, &o.crossings).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    Ok(CheckOutcome {
        allowed,
        limits: in_op_order(parts, &outcomes),
        now_ms,
        crossings,
    })
}
