//! The management API's live usage on Redis Cluster: one `read_usage.lua` call per hash
//! slot the configs sit in, in parallel (a script's keys share one slot).

use super::super::RedisStore;
use super::slot::key_slot;
use crate::limits::CompiledConfig;
use crate::store::{LimitUsage, StoreError};
use futures_util::future::try_join_all;

impl RedisStore {
    pub(in super::super) async fn read_usage_by_slot(
        &self,
        configs: &[&CompiledConfig],
    ) -> Result<(i64, Vec<Vec<LimitUsage>>), StoreError> {
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let slot = key_slot(self.keys.counters(&c.config.id).as_bytes());
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        let reads = groups.iter().map(|(_, members)| {
            let group: Vec<&CompiledConfig> = members.iter().map(|&i| configs[i]).collect();
            async move { self.read_usage_call(&group).await }
        });
        let answers = Box::pin(try_join_all(reads)).await?;
        let mut now = 0;
        let mut usage = vec![Vec::new(); configs.len()];
        for ((_, members), (at, read)) in groups.iter().zip(answers) {
            now = i64::max(now, at);
            for (&i, limits) in members.iter().zip(read) {
                usage[i] = limits;
            }
        }
        Ok((now, usage))
    }
}
