//! Coalesced checks and usage reports (SPEC §7): one script call in flight per Redis
//! node; what arrives meanwhile goes together in the next call.
//!
//! Redis runs one script at a time, and most of what a check costs it is per call
//! (argument parsing, script set-up, reading and decoding each config's counters). So a
//! replica keeps at most one `batch.lua` call in flight: an op that finds none goes at
//! once (no added latency when idle); ops that arrive while one is in flight queue and go
//! as one call (at most `MAX_BATCH`), in arrival order. Inside, each op is evaluated
//! exactly as if sent alone.
//!
//! One `Batcher` serves one Redis node (one connection); a cluster store runs one per
//! hash slot (`cluster::shards`: a script's declared keys must share a slot).
//!
//! A check whose caller stopped waiting (it answered by `--on-store-error`) but that
//! Redis ran in time and admitted is given back here, by its reservation time, in the
//! next call: a check answered by the fallback is never charged (SPEC §5).

use super::clock::{ClockOffset, local_ms};
use super::cluster::Conn;
use super::decode::unavailable;
use super::ops::{Op, OpAnswer, OpKind, decode_batch, fill_batch};
use super::scripts::{Lua, invoke};
use crate::metrics as m;
use crate::store::StoreError;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Ops per script call at most: bounds the time one call holds Redis.
pub const MAX_BATCH: usize = 64;

type Reply = oneshot::Sender<Result<OpAnswer, StoreError>>;

struct Pending {
    op: Op,
    /// None for give-backs: nobody waits for them.
    reply: Option<Reply>,
}

pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
}

/// What the batching task needs; it lives as long as some `Batcher` handle does.
struct Worker {
    conn: Conn,
    lua: Lua,
    marker_prefix: String,
    call_timeout: Duration,
    clock: Arc<ClockOffset>,
    /// Give-backs waiting for the next call.
    carried: VecDeque<Pending>,
}

impl Batcher {
    pub(super) fn start(
        conn: Conn,
        lua: Lua,
        marker_prefix: String,
        call_timeout: Duration,
        clock: Arc<ClockOffset>,
    ) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            conn,
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
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Pending {
                op,
                reply: Some(tx),
            })
            .map_err(|_| StoreError::Unavailable("store is shutting down".into()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(StoreError::Unavailable("store call dropped".into())),
            Err(_) => Err(StoreError::Timeout(timeout)),
        }
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
        let sent = local_ms();
        let fill = |cmd: &mut redis::Cmd| {
            fill_batch(cmd, &self.marker_prefix, batch.iter().map(|p| &p.op));
        };
        let mut conn = self.conn.clone();
        let result: Result<Vec<i64>, StoreError> =
            match tokio::time::timeout(self.call_timeout, invoke(&mut conn, &self.lua, fill)).await
            {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout(self.call_timeout)),
                Ok(Err(e)) => Err(unavailable(e)),
                Err(_) => Err(StoreError::Timeout(self.call_timeout)),
            };
        let decoded = result.and_then(|reply| decode_batch(&reply, batch.iter().map(|p| &p.op)));
        let (now, answers) = match decoded {
            Ok(d) => d,
            Err(e) => {
                for p in batch.drain(..) {
                    if let Some(reply) = p.reply {
                        let _ = reply.send(Err(e.clone()));
                    } else {
                        give_back_failed(&e);
                    }
                }
                return;
            }
        };
        let late = answers.contains(&OpAnswer::Late);
        self.clock.observe(sent, now, late);
        for (p, answer) in batch.drain(..).zip(answers) {
            let consumed =
                p.op.kind == OpKind::Check && matches!(&answer, OpAnswer::Check(o) if o.allowed);
            let Some(reply) = p.reply else { continue };
            if reply.send(Ok(answer)).is_err() && consumed {
                // The caller answered by policy; Redis charged it anyway.
                metrics::counter!(m::STORE_GIVE_BACKS).increment(1);
                self.carried.push_back(Pending {
                    op: p.op.give_back(now),
                    reply: None,
                });
            }
        }
    }
}

fn give_back_failed(e: &StoreError) {
    metrics::counter!(m::STORE_ERRORS, "op" => "give_back", "kind" => e.kind()).increment(1);
    tracing::warn!(error = %e, "could not give back a check answered by the store-error policy");
}
