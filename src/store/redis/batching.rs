//! Coalesced checks and usage reports: one script call in flight per Redis node; what
//! arrives meanwhile goes together in the next call.
//!
//! Redis runs one script at a time, and most of what a check costs it is per call
//! (argument parsing, script set-up, reading and decoding each config's counters). So a
//! replica keeps at most one `batch.lua` call in flight: an op that finds none goes at
//! once (no added latency when idle); ops that arrive while one is in flight queue and go
//! as one call (at most `MAX_BATCH`), in arrival order. Inside, each op is evaluated
//! exactly as if sent alone.
//!
//! One `Batcher` serves one Redis node (one connection); a cluster store runs one per
//! hash slot (`cluster::shards`: a script's declared keys must share a slot), all on
//! the cluster connection. In sentinel mode that node is whatever master is current:
//! each call takes the connection of the master in use (`Master::connection`), so after
//! a failover the next call goes to the new master, and a call failing the way a
//! failover makes calls fail (connection lost, `READONLY`, timeout) makes the follower
//! look again.
//!
//! With `--redis-wait-replicas N`, a call that admitted a check or applied a usage report
//! is followed by one `WAIT` on the same connection before those ops are answered. Their
//! callers wait for it beyond their store timeout (which bounds Redis's answer, not the
//! replication): a check Redis admitted is never answered by the fallback and then
//! given back because a replica was slow. A `WAIT` that falls short leaves them answered
//! as Redis decided, and counted (`replication`).
//!
//! A check whose caller stopped waiting (it answered by `--on-store-error`) but that
//! Redis ran in time and admitted is given back here, by its reservation time, in the
//! next call: a check answered by the fallback is never charged.

use super::clock::{ClockOffset, local_ms};
use super::connection::Master;
use super::decode::unavailable;
use super::ops::{Op, OpAnswer, OpKind, decode_batch, fill_batch};
use super::replication::Replicated;
use super::scripts::{Lua, invoke};
use crate::metrics as m;
use crate::store::{StoreError, UsageOutcome};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Ops per script call at most: bounds the time one call holds Redis.
pub const MAX_BATCH: usize = 64;

type Reply = oneshot::Sender<Result<OpAnswer, StoreError>>;

struct Pending {
    op: Op,
    /// None for give-backs: nobody waits for them.
    reply: Option<Reply>,
    /// Set (in ms) once Redis answered this op and its `WAIT` is under way: how much
    /// longer than its store timeout the caller waits for it.
    replicating: Arc<AtomicU64>,
}

pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
}

/// What the batching task needs; it lives as long as some `Batcher` handle does.
struct Worker {
    master: Arc<Master>,
    lua: Lua,
    marker_prefix: String,
    call_timeout: Duration,
    clock: Arc<ClockOffset>,
    /// Give-backs waiting for the next call.
    carried: VecDeque<Pending>,
}

impl Batcher {
    pub(super) fn start(
        master: Arc<Master>,
        lua: Lua,
        marker_prefix: String,
        call_timeout: Duration,
        clock: Arc<ClockOffset>,
    ) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            master,
            lua,
            marker_prefix,
            call_timeout,
            clock,
            carried: VecDeque::new(),
        };
        tokio::spawn(worker.run(rx));
        Batcher { queue }
    }

    /// Queues `op` and waits up to `timeout` for its answer. If none came in time and
    /// Redis still runs the check in time and consumes, the worker gives it back.
    pub(super) async fn run(&self, op: Op, timeout: Duration) -> Result<OpAnswer, StoreError> {
        let (tx, mut rx) = oneshot::channel();
        let replicating = Arc::new(AtomicU64::new(0));
        self.queue
            .send(Pending {
                op,
                reply: Some(tx),
                replicating: replicating.clone(),
            })
            .map_err(|_| StoreError::Unavailable("store is shutting down".into()))?;
        let answer = match tokio::time::timeout(timeout, &mut rx).await {
            Ok(answer) => answer,
            // Redis answered in time; its replicas are being waited for.
            Err(_) => match replicating.load(Ordering::SeqCst) {
                0 => return Err(StoreError::Timeout(timeout)),
                extra => {
                    let extra = Duration::from_millis(extra);
                    tokio::time::timeout(extra, &mut rx)
                        .await
                        .map_err(|_| StoreError::Timeout(timeout + extra))?
                }
            },
        };
        answer.unwrap_or_else(|_| Err(StoreError::Unavailable("store call dropped".into())))
    }
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
        loop {
            if self.carried.is_empty() {
                match rx.recv().await {
                    Some(p) => batch.push(p),
                    None => return,
                }
            }
            while batch.len() < MAX_BATCH {
                match self.carried.pop_front() {
                    Some(p) => batch.push(p),
                    None => break,
                }
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            // A caller that gave up before its op went out has answered by policy (or
            // 503): the op must not run.
            batch.retain(|p| p.reply.as_ref().is_none_or(|r| !r.is_closed()));
            if !batch.is_empty() {
                self.call(&mut batch).await;
            }
            batch.clear();
        }
    }

    async fn call(&mut self, batch: &mut Vec<Pending>) {
        metrics::histogram!(m::STORE_BATCH_SIZE).record(batch.len() as f64);
        // The current master's connection, taken per call: after a failover the next
        // call goes to the new master.
        let mut conn = match self.master.connection() {
            Ok(conn) => conn,
            Err(e) => return fail_all(batch, &e),
        };
        let sent = local_ms();
        let fill = |cmd: &mut redis::Cmd| {
            fill_batch(cmd, &self.marker_prefix, batch.iter().map(|p| &p.op));
        };
        let result: Result<Vec<i64>, StoreError> =
            match tokio::time::timeout(self.call_timeout, invoke(&mut conn, &self.lua, fill)).await
            {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => {
                    // A failed call is the first sign of a failover: the follower looks
                    // again (connection lost, READONLY, MASTERDOWN, timeout).
                    self.master.observe(&e);
                    if e.is_timeout() {
                        Err(StoreError::Timeout(self.call_timeout))
                    } else {
                        Err(unavailable(e))
                    }
                }
                Err(_) => {
                    self.master.suspect();
                    Err(StoreError::Timeout(self.call_timeout))
                }
            };
        let decoded = result.and_then(|reply| decode_batch(&reply, batch.iter().map(|p| &p.op)));
        let (now, answers) = match decoded {
            Ok(d) => d,
            Err(e) => return fail_all(batch, &e),
        };
        let late = answers.contains(&OpAnswer::Late);
        self.clock.observe(sent, now, late);
        // --redis-wait-replicas: one WAIT, on the connection the call went over, covers
        // every counter this call changed; the ops that changed some are answered after
        // it (without the option it returns at once).
        let changed = |op: &Op, answer: &OpAnswer| match (op.kind, answer) {
            (OpKind::Check, OpAnswer::Check(o)) | (OpKind::Lease, OpAnswer::Leased(o, _)) => {
                o.allowed
            }
            (kind, OpAnswer::Usage(u)) if kind.is_usage() => u.outcome == UsageOutcome::Applied,
            _ => false,
        };
        let changes = batch
            .iter()
            .zip(&answers)
            .filter(|(p, a)| changed(&p.op, a))
            .count();
        if changes > 0 {
            let extra = conn.replication_bound().as_millis() as u64;
            for (p, a) in batch.iter().zip(&answers) {
                if changed(&p.op, a) {
                    p.replicating.store(extra, Ordering::SeqCst);
                }
            }
        }
        let replicated = if changes > 0 {
            conn.wait_for_replicas().await
        } else {
            Replicated::Confirmed
        };
        if let Replicated::Short(_) = replicated {
            metrics::counter!(m::REDIS_WAIT_SHORTFALLS).increment(changes as u64);
        }
        for (p, answer) in batch.drain(..).zip(answers) {
            let undo = p.op.undo(&answer);
            let Some(reply) = p.reply else { continue };
            let answer = match &replicated {
                // No answer to the WAIT: the master may be gone, with or without its
                // replicas having these writes; answered as a store failure, and not
                // given back (see `replication`).
                Replicated::Failed(e) if changed(&p.op, &answer) => {
                    let _ = reply.send(Err(e.clone()));
                    continue;
                }
                // Short or confirmed: as Redis decided, and counted.
                _ => Ok(answer),
            };
            let lost = match &answer {
                Ok(OpAnswer::Check(o) | OpAnswer::Leased(o, _)) => o.crossings.len(),
                Ok(OpAnswer::Usage(r)) => r.crossings.len(),
                _ => 0,
            };
            if reply.send(answer).is_err()
                && let Some(undo) = undo
            {
                // The caller answered by policy (it stopped waiting before Redis
                // answered); Redis charged it anyway.
                metrics::counter!(m::STORE_GIVE_BACKS).increment(1);
                if lost > 0 {
                    tracing::warn!(
                        crossings = lost,
                        "a check answered too late had reached alert thresholds: not announced"
                    );
                }
                self.carried.push_back(Pending {
                    op: undo,
                    reply: None,
                    replicating: Arc::default(),
                });
            }
        }
    }
}

/// Answers every op of a call that failed with `e`.
fn fail_all(batch: &mut Vec<Pending>, e: &StoreError) {
    for p in batch.drain(..) {
        if let Some(reply) = p.reply {
            let _ = reply.send(Err(e.clone()));
        } else {
            give_back_failed(e);
        }
    }
}

fn give_back_failed(e: &StoreError) {
    metrics::counter!(m::STORE_ERRORS, "op" => "give_back", "kind" => e.kind()).increment(1);
    tracing::warn!(error = %e, "could not give back a check answered by the store-error policy");
}
