//! A `batch.lua` reply split into each op's answer (see the reply's layout at the top of
//! `lua/batch.lua`).

use super::decode::corrupt;
use super::ops::{Op, OpAnswer, OpKind};
use crate::store::StoreError;
use crate::store::{CheckOutcome, Crossing, Granted, LimitOutcome, Recorded, UsageOutcome};

/// Splits a `batch.lua` reply into each op's answer, in order.
pub fn decode_batch<'a>(
    reply: &[i64],
    ops: impl Iterator<Item = &'a Op>,
) -> Result<(i64, Vec<OpAnswer>), StoreError> {
    let (&now, mut rest) = reply
        .split_first()
        .ok_or_else(|| corrupt("batch answered nothing"))?;
    let mut answers = Vec::new();
    for op in ops {
        let (&status, tail) = rest
            .split_first()
            .ok_or_else(|| corrupt("batch answered too few values"))?;
        rest = tail;
        let answer = match (status, op.kind) {
            (-1, _) => OpAnswer::Late,
            (s, kind) if kind.is_check() => {
                // 1 allowed: used and reset per limit; 0 denied or 2 allowed although a
                // shadow limit refused: also admitted and retry.
                let (allowed, full) = match s {
                    1 => (true, false),
                    2 => (true, true),
                    0 => (false, true),
                    s => return Err(corrupt(format_args!("check answered {s}"))),
                };
                let width = if full { 4 } else { 2 };
                let n = op.limit_count();
                if rest.len() < width * n {
                    return Err(corrupt(format_args!("check answered too few values")));
                }
                let (values, tail) = rest.split_at(width * n);
                rest = tail;
                let outcome = CheckOutcome {
                    allowed,
                    limits: values
                        .chunks_exact(width)
                        .map(|c| LimitOutcome {
                            admitted: !full || c[2] == 1,
                            used: c[0],
                            reset_after_ms: c[1],
                            retry_after_ms: if full { c[3] } else { 0 },
                        })
                        .collect(),
                    now_ms: now,
                    crossings: Vec::new(),
                };
                if kind == OpKind::Lease {
                    if rest.len() < 1 + n {
                        return Err(corrupt("a lease answered too few values"));
                    }
                    let (leased, tail) = rest.split_at(1 + n);
                    rest = tail;
                    OpAnswer::Leased(outcome, Granted::decode(leased[0], &leased[1..], now))
                } else {
                    OpAnswer::Check(outcome)
                }
            }
            (1, kind) if kind.is_usage() => OpAnswer::Usage(Recorded::plain(UsageOutcome::Applied)),
            (0, kind) if kind.is_usage() => {
                OpAnswer::Usage(Recorded::plain(UsageOutcome::Duplicate))
            }
            (1, OpKind::GiveBack | OpKind::LeaseReturn) => OpAnswer::GaveBack,
            (s, kind) => return Err(corrupt(format_args!("{kind:?} answered {s}"))),
        };
        answers.push(answer);
    }
    decode_crossings(rest, now, &mut answers)?;
    Ok((now, answers))
}

/// The reply's tail: the number of threshold events, then 5 values each (op number from
/// 1, limit position in the op from 0, threshold position from 1, usage, a budget's
/// period start or 0), each handed to its op's answer.
fn decode_crossings(rest: &[i64], now: i64, answers: &mut [OpAnswer]) -> Result<(), StoreError> {
    let (&n, events) = rest
        .split_first()
        .ok_or_else(|| corrupt("batch answered no event count"))?;
    if n < 0 || events.len() != 5 * n as usize {
        return Err(corrupt("batch answered a wrong number of event values"));
    }
    for e in events.chunks_exact(5) {
        let (op, limit, threshold) = (e[0], e[1], e[2]);
        let crossings = usize::try_from(op - 1)
            .ok()
            .and_then(|i| answers.get_mut(i))
            .and_then(OpAnswer::crossings_mut)
            .ok_or_else(|| corrupt(format_args!("an event of op {op}, which has none")))?;
        if limit < 0 || threshold < 1 {
            return Err(corrupt("an event of no limit or no threshold"));
        }
        crossings.push(Crossing {
            limit: limit as usize,
            threshold: threshold as usize - 1,
            used: e[3],
            period_start_ms: (e[4] != 0).then_some(e[4]),
            at_ms: now,
        });
    }
    Ok(())
}
