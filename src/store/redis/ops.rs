//! One hot-path operation as `lua/batch.lua` receives it, and its answer: how a check, a
//! usage report or a give-back travels in a coalesced script call.
//!
//! Public so that benchmarks can call the script exactly as tollgate does.

use crate::store::{CheckOutcome, Crossing, Granted, Recorded};
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub use super::batch_reply::decode_batch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Check,
    DryRun,
    Usage,
    /// Takes back what a check consumed after tollgate had already answered it by its
    /// store-error policy (the reply came too late): a check the fallback answered is
    /// never charged (docs/counting.md, "Compensation").
    GiveBack,
    /// Charges what this replica admitted by itself while Redis did not answer
    /// (`--on-store-error local`), at its reservation time, once per id (a usage
    /// report's marker).
    Replay,
    /// A check that also leases part of its limits to this replica (`lua/lease.lua`).
    Lease,
    /// Gives back the unspent part of a lease, at the lease's end.
    LeaseReturn,
}

impl OpKind {
    fn code(self) -> u8 {
        match self {
            OpKind::Check => b'c',
            OpKind::DryRun => b'd',
            OpKind::Usage => b'u',
            OpKind::GiveBack => b'g',
            OpKind::Replay => b'l',
            OpKind::Lease => b'e',
            OpKind::LeaseReturn => b'x',
        }
    }

    /// Usage reports and replays: applied once per marker, answered applied/duplicate.
    pub(super) fn is_usage(self) -> bool {
        matches!(self, OpKind::Usage | OpKind::Replay)
    }

    pub(super) fn is_check(self) -> bool {
        matches!(self, OpKind::Check | OpKind::DryRun | OpKind::Lease)
    }

    /// Checks that consume when allowed: what a caller that stopped waiting gives back.
    pub(super) fn consumes(self) -> bool {
        matches!(self, OpKind::Check | OpKind::Lease)
    }

    /// Values per limit in `LeaseParts::per_limit`.
    pub(super) fn per_limit_width(self) -> usize {
        match self {
            OpKind::Lease => 2,
            OpKind::LeaseReturn => 1,
            _ => 0,
        }
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
///
/// The day is chosen here, from this replica's estimate of Redis's clock, because the
/// hashes are declared in the script's KEYS (on Redis Cluster only declared keys follow
/// their slot through a migration). The script looks in the day before and after too,
/// so two replicas whose estimates straddle midnight still find each other's markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub bucket: u16,
    pub field: u8,
    pub fingerprint: [u8; 10],
    /// Days since the Unix epoch, on Redis's clock as this replica estimates it.
    pub day: i64,
}

/// A day of markers, in ms.
pub const MARKER_DAY_MS: i64 = 86_400_000;

impl Marker {
    /// `scoped_id` is the report's identity and request id (`store::scoped_request_id`);
    /// `redis_now_ms` this replica's estimate of Redis's clock.
    pub fn of(scoped_id: &str, redis_now_ms: i64) -> Self {
        let h = Sha256::digest(scoped_id.as_bytes());
        let mut fingerprint = [0u8; 10];
        fingerprint.copy_from_slice(&h[3..13]);
        Marker {
            bucket: u16::from_le_bytes([h[0], h[1]]) & 0x1fff,
            field: h[2] & 0x7f,
            fingerprint,
            day: redis_now_ms.div_euclid(MARKER_DAY_MS),
        }
    }

    /// The hashes of the day before, the day, and the day after (in that order) under
    /// `base` (see `Keys::usage_markers`).
    fn keys(&self, base: &str) -> [String; 3] {
        [-1, 0, 1].map(|d| format!("{base}{}:{}", self.day + d, self.bucket))
    }

    /// When the day's hash may go: the end of the next day, plus an hour of slack.
    fn expires_at_ms(&self) -> i64 {
        (self.day + 2) * MARKER_DAY_MS + 3_600_000
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
    /// Leases and their returns only.
    pub lease: Option<LeaseParts>,
}

/// What a lease op carries beyond a check's or give-back's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseParts {
    /// Per limit of the op's configs, in order: `Lease` ask and held; `LeaseReturn` the
    /// amount that goes back.
    pub per_limit: Vec<i64>,
    /// `Lease`: the replicas alive (N), and the longest a lease may live (ms).
    pub replicas: i64,
    pub ahead_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpAnswer {
    /// Redis ran the call past the op's deadline; the op changed nothing.
    Late,
    Check(CheckOutcome),
    /// A lease op's answer: the check's, and what each limit leased.
    Leased(CheckOutcome, Granted),
    Usage(Recorded),
    GaveBack,
}

impl OpAnswer {
    /// The thresholds this op made a limit reach.
    pub(super) fn crossings_mut(&mut self) -> Option<&mut Vec<Crossing>> {
        match self {
            OpAnswer::Check(o) | OpAnswer::Leased(o, _) => Some(&mut o.crossings),
            OpAnswer::Usage(r) => Some(&mut r.crossings),
            _ => None,
        }
    }
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
            lease: None,
        }
    }

    /// What undoes this op's effect as `answer` reports it, if it consumed: a check's
    /// give-back, or a lease's return of the check's amounts and the lease together.
    pub fn undo(&self, answer: &OpAnswer) -> Option<Op> {
        match answer {
            OpAnswer::Check(o) | OpAnswer::Leased(o, _) if !self.kind.consumes() || !o.allowed => {
                None
            }
            OpAnswer::Check(o) => Some(self.give_back(o.now_ms)),
            OpAnswer::Leased(o, granted) => match granted.until_ms() {
                None => Some(self.give_back(o.now_ms)),
                Some(until) => {
                    let per_limit = granted.per_limit.iter().map(|g| g.added).collect();
                    Some(Op::lease_return(self.configs.clone(), per_limit, until))
                }
            },
            _ => None,
        }
    }

    /// Gives back `per_limit` (per limit of `configs`) of a lease that ended at `until_ms`.
    pub fn lease_return(configs: Vec<ConfigRef>, per_limit: Vec<i64>, until_ms: i64) -> Op {
        Op {
            kind: OpKind::LeaseReturn,
            deadline: 0,
            amounts: [0; 3],
            reserved_at: until_ms,
            configs,
            marker: None,
            lease: Some(LeaseParts {
                per_limit,
                ..LeaseParts::default()
            }),
        }
    }

    pub(super) fn limit_count(&self) -> usize {
        self.configs.iter().map(|c| c.n_limits).sum()
    }

    /// Where this op's marker hashes live: `marker_base`, or on Redis Cluster (empty
    /// base) in the slot of the op's first config (`keys::cluster_marker_base`).
    fn marker_keys(&self, marker_base: &str) -> Option<[String; 3]> {
        let marker = self.marker.as_ref()?;
        Some(match (marker_base, self.configs.first()) {
            ("", Some(first)) => marker.keys(&super::keys::cluster_marker_base(&first.key)),
            (base, _) => marker.keys(base),
        })
    }

    fn encode(&self, index: &FxHashMap<&str, u16>, marker_base: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + 2 * self.configs.len() + 26);
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
        match (&self.marker, self.marker_keys(marker_base)) {
            (Some(m), Some(keys)) => {
                out.push(1);
                for key in &keys {
                    out.extend_from_slice(&index[key.as_str()].to_le_bytes());
                }
                out.push(m.field);
                out.extend_from_slice(&m.fingerprint);
                out.extend_from_slice(&(m.expires_at_ms() as f64).to_le_bytes());
            }
            _ => out.push(0),
        }
        if let Some(lease) = &self.lease {
            if self.kind == OpKind::Lease {
                for v in [lease.replicas, lease.ahead_ms] {
                    out.extend_from_slice(&(v as f64).to_le_bytes());
                }
            }
            for v in &lease.per_limit {
                out.extend_from_slice(&(*v as f64).to_le_bytes());
            }
        }
        out
    }
}

/// Every key one `batch.lua` call declares, each once, with its position in KEYS (from
/// 1): the counters of each config the ops touch, then the marker hashes of their
/// usage reports.
struct CallKeys<'a> {
    index: FxHashMap<&'a str, u16>,
    configs: Vec<&'a ConfigRef>,
    markers: Vec<&'a str>,
}

impl<'a> CallKeys<'a> {
    fn of<'o: 'a>(ops: impl Iterator<Item = &'o Op>, markers: &'a [[String; 3]]) -> Self {
        let mut index: FxHashMap<&str, u16> = FxHashMap::default();
        let mut configs: Vec<&ConfigRef> = Vec::new();
        for op in ops {
            for c in &op.configs {
                index.entry(c.key.as_str()).or_insert_with(|| {
                    configs.push(c);
                    configs.len() as u16
                });
            }
        }
        let mut marker_keys: Vec<&str> = Vec::new();
        for key in markers.iter().flatten() {
            let next = (configs.len() + marker_keys.len() + 1) as u16;
            index.entry(key.as_str()).or_insert_with(|| {
                marker_keys.push(key);
                next
            });
        }
        CallKeys {
            index,
            configs,
            markers: marker_keys,
        }
    }
}

/// The marker hashes of every op that carries a marker.
fn marker_keys<'a>(marker_base: &str, ops: impl Iterator<Item = &'a Op>) -> Vec<[String; 3]> {
    ops.filter_map(|op| op.marker_keys(marker_base)).collect()
}

/// The KEYS and ARGV of one `batch.lua` call carrying `ops` (for benchmarks and tests
/// that call the script directly).
pub fn batch_parts(marker_base: &str, ops: &[Op]) -> (Vec<String>, Vec<Vec<u8>>) {
    let markers = marker_keys(marker_base, ops.iter());
    let keys = CallKeys::of(ops.iter(), &markers);
    let mut names: Vec<String> = keys.configs.iter().map(|c| c.key.clone()).collect();
    names.extend(keys.markers.iter().map(|k| k.to_string()));
    let mut args = vec![keys.configs.len().to_string().into_bytes()];
    args.extend(keys.configs.iter().map(|c| c.limits.to_vec()));
    args.extend(ops.iter().map(|op| op.encode(&keys.index, marker_base)));
    (names, args)
}

/// Writes the keys and arguments of one `batch.lua` call carrying `ops` (after the
/// script, starting with the number of keys): each key once, however many ops use it.
pub fn fill_batch<'a>(
    cmd: &mut redis::Cmd,
    marker_base: &str,
    ops: impl Iterator<Item = &'a Op> + Clone,
) {
    let markers = marker_keys(marker_base, ops.clone());
    let keys = CallKeys::of(ops.clone(), &markers);
    cmd.arg(keys.configs.len() + keys.markers.len());
    for c in &keys.configs {
        cmd.arg(&c.key);
    }
    for m in &keys.markers {
        cmd.arg(*m);
    }
    cmd.arg(keys.configs.len());
    for c in &keys.configs {
        cmd.arg(&*c.limits);
    }
    for op in ops {
        cmd.arg(op.encode(&keys.index, marker_base));
    }
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
