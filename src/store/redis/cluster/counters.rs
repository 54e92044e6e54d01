//! A config's counters on Redis Cluster when the config is updated or deleted: they
//! live in the slot of the config's id, the config plane in another, and one script's
//! keys must share a slot. So the config write goes first (atomic, fenced, logged) and
//! a second call then seeds, drops or extends the counters (`lua/counters_update.lua`),
//! or deletes them. Between the two a check may see the counters as they were (a new
//! budget starts unseeded for that moment); if the second call fails, it is logged and
//! the counters stay as they were (a removed budget's field expires with its hash).

use super::super::RedisStore;
use super::super::config_plane::seed_args;
use super::super::scripts::invoke;
use crate::store::BudgetSeed;

impl RedisStore {
    pub(in super::super) async fn update_counters(
        &self,
        counters: &str,
        lifetime_ms: i64,
        seeds: &[BudgetSeed],
        removed: &[String],
    ) {
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(1).arg(counters).arg(lifetime_ms).arg(seeds.len());
            for seed in seeds {
                seed_args(cmd, seed);
            }
            cmd.arg(removed);
        };
        let done: Result<i64, _> = match self.connection() {
            Ok(mut conn) => {
                self.bounded(
                    self.bulk_timeout,
                    invoke(&mut conn, &self.scripts.counters_update, fill),
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, key = counters, "config updated, but not its counters (seeded budgets, removed fields, TTL)");
        }
    }

    pub(in super::super) async fn drop_counters(&self, counters: &str) {
        let done: Result<i64, _> = match self.connection() {
            Ok(mut conn) => {
                self.bounded(
                    self.timeout,
                    redis::cmd("DEL").arg(counters).query_async(&mut conn),
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, key = counters, "config deleted, but not its counters (they expire by their TTL)");
        }
    }
}
