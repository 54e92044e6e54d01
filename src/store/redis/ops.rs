//! One hot-path operation as `lua/batch.lua` receives it, and its answer: how a check, a
//! usage report or a give-back travels in a coalesced script call.
//!
//! Public so that benchmarks can call the script exactly as tollgate does.

use crate::store::{CheckOutcome, LimitOutcome, StoreError, UsageOutcome};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

use super::decode::corrupt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Check,
    DryRun,
    Usage,
    /// Takes back what a check consumed after tollgate had already answered it by its
    /// store-error policy (the reply came too late): SPEC §5.
    GiveBack,
}

impl OpKind {
    fn code(self) -> u8 {
        match self {
            OpKind::Check => b'c',
            OpKind::DryRun => b'd',
            OpKind::Usage => b'u',
            OpKind::GiveBack => b'g',
        }
    }

    fn is_check(self) -> bool {
        matches!(self, OpKind::Check | OpKind::DryRun)
    }
}

/// A config an op touches: its counters key and its limits packed for the scripts.
#[derive(Debug, Clone)]
pub struct ConfigRef {
    pub key: String,
    pub limits: Arc<[u8]>,
    pub n_limits: usize,
}

/// Where the idempotency marker of a usage report lives (see `lua/usage.lua`): a hash of
/// the day (one of 8192), a field of it (one of 128), and a 10-byte fingerprint, all
/// from SHA-256 of the report's identity and request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub bucket: u16,
    pub field: u8,
    pub fingerprint: [u8; 10],
}

impl Marker {
    /// `scoped_id` is the report's identity and request id (`store::scoped_request_id`).
    pub fn of(scoped_id: &str) -> Self {
        let h = Sha256::digest(scoped_id.as_bytes());
        let mut fingerprint = [0u8; 10];
        fingerprint.copy_from_slice(&h[3..13]);
        Marker {
            bucket: u16::from_le_bytes([h[0], h[1]]) & 0x1fff,
            field: h[2] & 0x7f,
            fingerprint,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Op {
    pub kind: OpKind,
    /// ms on Redis's clock; 0 = none.
    pub deadline: i64,
    /// requests, tokens, nano-dollars: a check's amounts, a report's deltas.
    pub amounts: [i64; 3],
    /// Reservation time (ms on Redis's clock) of a refund; 0 = not known.
    pub reserved_at: i64,
    pub configs: Vec<ConfigRef>,
    pub marker: Option<Marker>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpAnswer {
    /// Redis ran the call past the op's deadline; the op changed nothing.
    Late,
    Check(CheckOutcome),
    Usage(UsageOutcome),
    GaveBack,
}

impl Op {
    /// The give-back of this check after Redis said it consumed at `now_ms`.
    pub fn give_back(&self, now_ms: i64) -> Op {
        Op {
            kind: OpKind::GiveBack,
            deadline: 0,
            amounts: self.amounts.map(|a| -a),
            reserved_at: now_ms,
            configs: self.configs.clone(),
            marker: None,
        }
    }

    fn limit_count(&self) -> usize {
        self.configs.iter().map(|c| c.n_limits).sum()
    }

    fn encode(&self, index: &HashMap<&str, u16>) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + 2 * self.configs.len() + 14);
        out.push(self.kind.code());
        for v in [
            self.deadline,
            self.amounts[0],
            self.amounts[1],
            self.amounts[2],
        ] {
            out.extend_from_slice(&(v as f64).to_le_bytes());
        }
        out.extend_from_slice(&(self.reserved_at as f64).to_le_bytes());
        out.extend_from_slice(&(self.configs.len() as u16).to_le_bytes());
        for c in &self.configs {
            out.extend_from_slice(&index[c.key.as_str()].to_le_bytes());
        }
        match &self.marker {
            Some(m) => {
                out.push(1);
                out.extend_from_slice(&m.bucket.to_le_bytes());
                out.push(m.field);
                out.extend_from_slice(&m.fingerprint);
            }
            None => out.push(0),
        }
        out
    }
}

/// Each config the ops touch, once, and its position in KEYS (from 1).
fn distinct_configs<'a>(
    ops: impl Iterator<Item = &'a Op>,
) -> (HashMap<&'a str, u16>, Vec<&'a ConfigRef>) {
    let mut index: HashMap<&str, u16> = HashMap::new();
    let mut configs: Vec<&ConfigRef> = Vec::new();
    for op in ops {
        for c in &op.configs {
            index.entry(c.key.as_str()).or_insert_with(|| {
                configs.push(c);
                configs.len() as u16
            });
        }
    }
    (index, configs)
}

/// The KEYS and ARGV of one `batch.lua` call carrying `ops` (for benchmarks and tests
/// that call the script directly).
pub fn batch_parts(marker_prefix: &str, ops: &[Op]) -> (Vec<String>, Vec<Vec<u8>>) {
    let (index, configs) = distinct_configs(ops.iter());
    let keys = configs.iter().map(|c| c.key.clone()).collect();
    let mut args = vec![marker_prefix.as_bytes().to_vec()];
    args.extend(configs.iter().map(|c| c.limits.to_vec()));
    args.extend(ops.iter().map(|op| op.encode(&index)));
    (keys, args)
}

/// Writes the keys and arguments of one `batch.lua` call carrying `ops` (after the
/// script, starting with the number of keys): each config once, however many ops use it.
pub fn fill_batch<'a>(
    cmd: &mut redis::Cmd,
    marker_prefix: &str,
    ops: impl Iterator<Item = &'a Op> + Clone,
) {
    let (index, configs) = distinct_configs(ops.clone());
    cmd.arg(configs.len());
    for c in &configs {
        cmd.arg(&c.key);
    }
    cmd.arg(marker_prefix);
    for c in &configs {
        cmd.arg(&*c.limits);
    }
    for op in ops {
        cmd.arg(op.encode(&index));
    }
}

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
                // Allowed: used and reset per limit; denied: also admitted and retry.
                let allowed = s == 1;
                let width = if allowed { 2 } else { 4 };
                let n = op.limit_count();
                if rest.len() < width * n {
                    return Err(corrupt(format_args!("check answered too few values")));
                }
                let (values, tail) = rest.split_at(width * n);
                rest = tail;
                OpAnswer::Check(CheckOutcome {
                    allowed,
                    limits: values
                        .chunks_exact(width)
                        .map(|c| LimitOutcome {
                            admitted: allowed || c[2] == 1,
                            used: c[0],
                            reset_after_ms: c[1],
                            retry_after_ms: if allowed { 0 } else { c[3] },
                        })
                        .collect(),
                    now_ms: now,
                })
            }
            (1, OpKind::Usage) => OpAnswer::Usage(UsageOutcome::Applied),
            (0, OpKind::Usage) => OpAnswer::Usage(UsageOutcome::Duplicate),
            (1, OpKind::GiveBack) => OpAnswer::GaveBack,
            (s, kind) => return Err(corrupt(format_args!("{kind:?} answered {s}"))),
        };
        answers.push(answer);
    }
    if !rest.is_empty() {
        return Err(corrupt("batch answered too many values"));
    }
    Ok((now, answers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_of_two_identities_with_one_request_id_differ() {
        let a = Marker::of("m|p|vk-1|u|req-1");
        let b = Marker::of("m|p|vk-2|u|req-1");
        assert_ne!(a, b);
        assert_eq!(a, Marker::of("m|p|vk-1|u|req-1"));
        assert!(a.bucket < 8192 && a.field < 128);
    }
}
