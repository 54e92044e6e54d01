//! The counters on Redis (`store::Counters`): checks and usage reports, ops of the
//! coalesced `batch.lua` call (see `batching`), and the management API's live usage
//! (one `read_usage.lua` call).

use super::RedisStore;
use super::decode::corrupt;
use super::ops::{ConfigRef, LeaseParts, Marker, Op, OpAnswer, OpKind};
use super::packed_limits::packed_limits;
use super::scripts::invoke;
use crate::limits::CompiledConfig;
use crate::store::{
    Amounts, CheckOutcome, Counters, Granted, LeaseAsk, LimitUsage, Recorded, StoreError,
    UsageDelta, UsageOutcome,
};

impl RedisStore {
    fn config_refs(&self, configs: &[&CompiledConfig]) -> Vec<ConfigRef> {
        configs
            .iter()
            .map(|c| ConfigRef {
                key: self.keys.counters(&c.config.id),
                limits: packed_limits(c).clone(),
                n_limits: c.limits().len(),
            })
            .collect()
    }

    /// Sends `op` with a deadline on Redis's clock, past which it changes nothing.
    async fn run_op(&self, mut op: Op) -> Result<OpAnswer, StoreError> {
        op.deadline = self.clock.deadline(super::clock::local_ms(), self.timeout);
        let answer = match &self.shards {
            Some(shards) => shards.run(op, self.timeout).await?,
            None => self.batcher.run(op, self.timeout).await?,
        };
        match answer {
            OpAnswer::Late => Err(StoreError::Timeout(self.timeout)),
            answer => Ok(answer),
        }
    }
}

impl Counters for RedisStore {
    async fn check(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        dry_run: bool,
    ) -> Result<CheckOutcome, StoreError> {
        let op = Op {
            kind: if dry_run {
                OpKind::DryRun
            } else {
                OpKind::Check
            },
            deadline: 0,
            amounts: [amounts.requests, amounts.tokens, amounts.cost_nanos],
            reserved_at: 0,
            configs: self.config_refs(configs),
            marker: None,
            lease: None,
        };
        match self.run_op(op).await? {
            OpAnswer::Check(outcome) => Ok(outcome),
            other => Err(corrupt(format_args!("a check answered {other:?}"))),
        }
    }

    async fn check_leasing(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        ask: &LeaseAsk,
    ) -> Result<(CheckOutcome, Granted), StoreError> {
        let op = Op {
            kind: OpKind::Lease,
            deadline: 0,
            amounts: [amounts.requests, amounts.tokens, amounts.cost_nanos],
            reserved_at: 0,
            configs: self.config_refs(configs),
            marker: None,
            lease: Some(LeaseParts {
                per_limit: ask.per_limit.iter().flatten().copied().collect(),
                replicas: ask.replicas,
                ahead_ms: ask.ahead_ms,
            }),
        };
        match self.run_op(op).await? {
            OpAnswer::Leased(outcome, granted) => Ok((outcome, granted)),
            other => Err(corrupt(format_args!("a lease answered {other:?}"))),
        }
    }

    async fn return_lease(
        &self,
        config: &CompiledConfig,
        per_limit: &[i64],
        until_ms: i64,
    ) -> Result<(), StoreError> {
        let op = Op::lease_return(self.config_refs(&[config]), per_limit.to_vec(), until_ms);
        self.run_op(op).await.map(|_| ())
    }

    /// `request_id` is already scoped by the report's identity
    /// (`store::scoped_request_id`). A report that matches no config writes nothing.
    async fn record_usage(
        &self,
        configs: &[&CompiledConfig],
        delta: UsageDelta,
        request_id: Option<&str>,
    ) -> Result<Recorded, StoreError> {
        if configs.is_empty() {
            return Ok(Recorded::plain(UsageOutcome::Applied));
        }
        let op = Op {
            kind: OpKind::Usage,
            deadline: 0,
            amounts: [0, delta.tokens, delta.cost_nanos],
            reserved_at: delta.reserved_at_ms.unwrap_or(0),
            configs: self.config_refs(configs),
            marker: request_id
                .map(|id| Marker::of(id, self.clock.redis_now_ms(super::clock::local_ms()))),
            lease: None,
        };
        match self.run_op(op).await? {
            OpAnswer::Usage(outcome) => Ok(outcome),
            other => Err(corrupt(format_args!("a usage report answered {other:?}"))),
        }
    }

    async fn replay(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        at_local_ms: i64,
        id: &str,
    ) -> Result<UsageOutcome, StoreError> {
        if configs.is_empty() {
            return Ok(UsageOutcome::Applied);
        }
        let op = Op {
            kind: OpKind::Replay,
            deadline: 0,
            amounts: [amounts.requests, amounts.tokens, amounts.cost_nanos],
            reserved_at: self.clock.redis_now_ms(at_local_ms).max(1),
            configs: self.config_refs(configs),
            marker: Some(Marker::of(
                id,
                self.clock.redis_now_ms(super::clock::local_ms()),
            )),
            lease: None,
        };
        match self.run_op(op).await? {
            OpAnswer::Usage(recorded) => Ok(recorded.outcome),
            other => Err(corrupt(format_args!("a replay answered {other:?}"))),
        }
    }

    async fn read_usage(
        &self,
        configs: &[&CompiledConfig],
    ) -> Result<(i64, Vec<Vec<LimitUsage>>), StoreError> {
        if configs.is_empty() {
            return Ok((chrono::Utc::now().timestamp_millis(), Vec::new()));
        }
        if self.shards.is_some() {
            return self.read_usage_by_slot(configs).await;
        }
        self.read_usage_call(configs).await
    }
}

impl RedisStore {
    /// One `read_usage.lua` call over `configs` (all in one slot on Redis Cluster).
    pub(super) async fn read_usage_call(
        &self,
        configs: &[&CompiledConfig],
    ) -> Result<(i64, Vec<Vec<LimitUsage>>), StoreError> {
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(configs.len());
            self.counter_keys(cmd, configs);
            Self::limit_args(cmd, configs);
        };
        let mut conn = self.connection()?;
        let reply: Vec<i64> = self
            .bounded(
                self.bulk_timeout,
                invoke(&mut conn, &self.scripts.read_usage, fill),
            )
            .await?;
        let expected: usize = configs.iter().map(|c| c.limits().len()).sum();
        if reply.len() != 1 + 2 * expected {
            return Err(corrupt("read_usage answered the wrong number of values"));
        }
        let mut values = reply[1..].chunks_exact(2);
        let usage = configs
            .iter()
            .map(|c| {
                c.limits()
                    .iter()
                    .map(|_| {
                        let v = values.next().expect("length checked");
                        LimitUsage {
                            used: v[0],
                            start_ms: v[1],
                        }
                    })
                    .collect()
            })
            .collect();
        Ok((reply[0], usage))
    }
}
