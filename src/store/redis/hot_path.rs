//! The calls a check and a usage report make: one script call each.

use super::RedisStore;
use super::clock::local_ms;
use super::decode::corrupt;
use super::scripts::invoke;
use crate::limits::CompiledConfig;
use crate::store::{
    Amounts, CheckOutcome, LimitOutcome, LimitUsage, StoreError, USAGE_ID_TTL, UsageDelta,
    UsageOutcome,
};

impl RedisStore {
    pub(super) async fn run_check(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        dry_run: bool,
    ) -> Result<CheckOutcome, StoreError> {
        let sent = local_ms();
        let deadline = self.clock.deadline(sent, self.timeout);
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(configs.len());
            self.counter_keys(cmd, configs);
            cmd.arg(if dry_run { "1" } else { "0" })
                .arg(amounts.requests)
                .arg(amounts.tokens)
                .arg(amounts.cost_nanos)
                .arg(deadline);
            Self::limit_args(cmd, configs);
        };
        let mut conn = self.connection()?;
        let reply: Vec<i64> = self
            .bounded(self.timeout, invoke(&mut conn, &self.scripts.check, fill))
            .await?;
        self.observe_clock(sent, &reply)?;
        if !dry_run && reply.first() == Some(&1) {
            conn.wait_for_replicas().await?;
        }
        let expected: usize = configs.iter().map(|c| c.limits.len()).sum();
        if reply.len() != 2 + 4 * expected {
            return Err(corrupt(format_args!(
                "check answered {} values for {expected} limits",
                reply.len()
            )));
        }
        let limits = reply[2..]
            .chunks_exact(4)
            .map(|c| LimitOutcome {
                admitted: c[0] == 1,
                used: c[1],
                reset_after_ms: c[2],
                retry_after_ms: c[3],
            })
            .collect();
        Ok(CheckOutcome {
            allowed: reply[0] == 1,
            limits,
            now_ms: reply[1],
        })
    }

    pub(super) async fn run_usage(
        &self,
        configs: &[&CompiledConfig],
        delta: UsageDelta,
        request_id: Option<&str>,
    ) -> Result<UsageOutcome, StoreError> {
        let marker = self.keys.usage_id(request_id.unwrap_or(""));
        let sent = local_ms();
        let deadline = self.clock.deadline(sent, self.timeout);
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(1 + configs.len()).arg(&marker);
            self.counter_keys(cmd, configs);
            cmd.arg(if request_id.is_some() { "1" } else { "0" })
                .arg(USAGE_ID_TTL.as_millis() as u64)
                .arg(delta.tokens)
                .arg(delta.cost_nanos)
                .arg(deadline)
                .arg(delta.reserved_at_ms.unwrap_or(0));
            Self::limit_args(cmd, configs);
        };
        let mut conn = self.connection()?;
        let reply: Vec<i64> = self
            .bounded(self.timeout, invoke(&mut conn, &self.scripts.usage, fill))
            .await?;
        self.observe_clock(sent, &reply)?;
        if reply.first() == Some(&1) {
            conn.wait_for_replicas().await?;
        }
        match reply.first() {
            Some(1) => Ok(UsageOutcome::Applied),
            Some(0) => Ok(UsageOutcome::Duplicate),
            _ => Err(corrupt("malformed usage answer")),
        }
    }

    pub(super) async fn run_read_usage(
        &self,
        configs: &[&CompiledConfig],
    ) -> Result<(i64, Vec<Vec<LimitUsage>>), StoreError> {
        if configs.is_empty() {
            return Ok((chrono::Utc::now().timestamp_millis(), Vec::new()));
        }
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
        let expected: usize = configs.iter().map(|c| c.limits.len()).sum();
        if reply.len() != 1 + 2 * expected {
            return Err(corrupt("read_usage answered the wrong number of values"));
        }
        let mut values = reply[1..].chunks_exact(2);
        let usage = configs
            .iter()
            .map(|c| {
                c.limits
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
