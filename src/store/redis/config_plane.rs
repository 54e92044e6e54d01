//! Config writes in Redis (`store::ConfigWrites`): one script each, atomic with the
//! uniqueness rule, fenced by the config's revision, by the store epoch, and by a
//! deadline on Redis's clock. Each costs O(1) in the number of configs: it logs the
//! changed id for incremental sync.

use super::RedisStore;
use super::decode::{corrupt, write_result};
use super::packed_limits::grid_args;
use super::scripts::{Lua, invoke};
use crate::limits::CompiledConfig;
use crate::limits::LimitSpec;
use crate::model::ModelConfig;
use crate::store::{
    BudgetSeed, ConfigWrites, StoreError, WriteError, Written, budget_seeds, removed_budget_fields,
};
use redis::{AsyncCommands, Value};

impl ConfigWrites for RedisStore {
    async fn get_config(&self, id: &str) -> Result<Option<ModelConfig>, StoreError> {
        let mut conn = self.connection()?;
        let raw: Option<String> = self
            .bounded(self.timeout, conn.hget(&self.keys.configs, id))
            .await?;
        raw.map(|json| serde_json::from_str(&json).map_err(corrupt))
            .transpose()
    }

    async fn create_config(
        &self,
        config: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        let json = serde_json::to_string(config).map_err(corrupt)?;
        let identity = config.identity();
        self.write_script(&self.scripts.create, None, epoch, |cmd| {
            cmd.arg(config.id.as_str()).arg(&identity).arg(&json);
        })
        .await
    }

    async fn replace_config(
        &self,
        old: &ModelConfig,
        new: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        let json = serde_json::to_string(new).map_err(corrupt)?;
        let (old_identity, new_identity) = (old.identity(), new.identity());
        let removed = removed_budget_fields(old, new);
        let seeds = budget_seeds(old, new).map_err(corrupt)?;
        let lifetime_ms = CompiledConfig::counter_lifetime_of(new).map_err(corrupt)?;
        let counters = self.keys.counters(&old.id);
        if self.keys.is_cluster() {
            // The counters live in another slot: the config write leaves them alone and
            // a second call updates them (cluster::counters).
            let none: [&str; 0] = [];
            let written = self
                .write_script(
                    &self.scripts.update,
                    Some(&self.keys.no_counters),
                    epoch,
                    |cmd| {
                        cmd.arg(old.id.as_str())
                            .arg(old.revision)
                            .arg(&old_identity)
                            .arg(&new_identity)
                            .arg(&json)
                            .arg(lifetime_ms)
                            .arg(0)
                            .arg(&none);
                    },
                )
                .await?;
            self.update_counters(&counters, lifetime_ms, &seeds, &removed)
                .await;
            return Ok(written);
        }
        self.write_script(&self.scripts.update, Some(&counters), epoch, |cmd| {
            cmd.arg(old.id.as_str())
                .arg(old.revision)
                .arg(&old_identity)
                .arg(&new_identity)
                .arg(&json)
                .arg(lifetime_ms)
                .arg(seeds.len());
            for seed in &seeds {
                seed_args(cmd, seed);
            }
            cmd.arg(&removed);
        })
        .await
    }

    async fn delete_config(
        &self,
        old: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        let identity = old.identity();
        let counters = self.keys.counters(&old.id);
        let in_script = if self.keys.is_cluster() {
            &self.keys.no_counters
        } else {
            &counters
        };
        let written = self
            .write_script(&self.scripts.delete, Some(in_script), epoch, |cmd| {
                cmd.arg(old.id.as_str()).arg(old.revision).arg(&identity);
            })
            .await?;
        if self.keys.is_cluster() {
            self.drop_counters(&counters).await;
        }
        Ok(written)
    }
}

impl RedisStore {
    /// Runs a config script so that a write answered as failed never happens later:
    /// Redis queues commands while it is paused or stalled and runs them when it
    /// resumes, long after a timeout. So the script gets a deadline on Redis's own clock
    /// (`TIME` now plus the store timeout) past which it changes nothing, and tollgate
    /// waits (up to the bulk timeout) to hear which way it went.
    async fn write_script(
        &self,
        lua: &Lua,
        counters: Option<&str>,
        epoch: Option<&str>,
        args: impl Fn(&mut redis::Cmd),
    ) -> Result<Written, WriteError> {
        let mut conn = self.connection()?;
        let (secs, micros): (u64, u64) = self
            .bounded(self.timeout, redis::cmd("TIME").query_async(&mut conn))
            .await?;
        let deadline = secs * 1000 + micros / 1000 + self.timeout.as_millis() as u64;
        let fresh_epoch = uuid::Uuid::new_v4().to_string();
        let keys = self.keys.config_plane();
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(keys.len() + usize::from(counters.is_some()))
                .arg(&keys)
                .arg(counters)
                .arg(deadline)
                .arg(epoch.unwrap_or(""))
                .arg(&fresh_epoch)
                .arg(&self.keys.channel);
            args(cmd);
        };
        let reply: Vec<Value> = self
            .bounded(self.bulk_timeout, invoke(&mut conn, lua, fill))
            .await?;
        write_result(reply, self.timeout)
    }
}

/// One seed as `config_update.lua` reads it: the target budget's field, length, grid mode
/// and grid param, then the source budget's.
pub(super) fn seed_args(cmd: &mut redis::Cmd, seed: &BudgetSeed) {
    let limit = |cmd: &mut redis::Cmd, spec: &LimitSpec| {
        let (mode, param, _) = spec.grid().map_or((0, 0, 0), grid_args);
        cmd.arg(spec.field()).arg(spec.len_ms).arg(mode).arg(param);
    };
    limit(cmd, &seed.target);
    limit(cmd, &seed.source);
}
