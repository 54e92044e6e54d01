//! Configs in Redis: reading them, and the write scripts (atomic with the uniqueness
//! rule, fenced by revision and by a deadline on Redis's clock).

use super::RedisStore;
use super::decode::corrupt;
use crate::limits::CompiledConfig;
use crate::limits::LimitSpec;
use crate::model::ModelConfig;
use crate::store::{BudgetSeed, StoreError, WriteError, budget_seeds, removed_budget_fields};
use redis::AsyncCommands;

impl RedisStore {
    pub(super) async fn load_all_configs(&self) -> Result<(u64, Vec<ModelConfig>), StoreError> {
        let mut conn = self.conn.clone();
        let (version, raw): (Option<u64>, Vec<String>) = self
            .bounded(
                self.bulk_timeout,
                redis::pipe()
                    .atomic()
                    .get(&self.keys.version)
                    .hvals(&self.keys.configs)
                    .query_async(&mut conn),
            )
            .await?;
        let configs = raw
            .iter()
            .filter_map(|json| match serde_json::from_str::<ModelConfig>(json) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "skipping unreadable config in redis");
                    None
                }
            })
            .collect();
        Ok((version.unwrap_or(0), configs))
    }

    pub(super) async fn read_config_version(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        // Only the sync loop asks: it may wait longer than a check, so the first call can
        // also establish the connection (a TLS handshake can take longer than a check may).
        let v: Option<u64> = self
            .bounded(self.bulk_timeout, conn.get(&self.keys.version))
            .await?;
        Ok(v.unwrap_or(0))
    }

    pub(super) async fn read_config(&self, id: &str) -> Result<Option<ModelConfig>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = self
            .bounded(self.timeout, conn.hget(&self.keys.configs, id))
            .await?;
        raw.map(|json| serde_json::from_str(&json).map_err(corrupt))
            .transpose()
    }

    pub(super) async fn write_new_config(&self, config: &ModelConfig) -> Result<u64, WriteError> {
        let json = serde_json::to_string(config).map_err(corrupt)?;
        let identity = config.identity();
        let keys = [
            self.keys.configs.as_str(),
            &self.keys.identities,
            &self.keys.version,
        ];
        self.write_script(&self.scripts.create, &keys, |cmd| {
            cmd.arg(&config.id)
                .arg(&identity)
                .arg(&json)
                .arg(&self.keys.channel);
        })
        .await
    }

    pub(super) async fn write_replaced_config(
        &self,
        old: &ModelConfig,
        new: &ModelConfig,
    ) -> Result<u64, WriteError> {
        let json = serde_json::to_string(new).map_err(corrupt)?;
        let (old_identity, new_identity) = (old.identity(), new.identity());
        let removed = removed_budget_fields(old, new);
        let seeds = budget_seeds(old, new).map_err(corrupt)?;
        let lifetime_ms = CompiledConfig::counter_lifetime_of(new).map_err(corrupt)?;
        let counters = self.keys.counters(&old.id);
        let keys = self.keys.for_config_write(&counters);
        self.write_script(&self.scripts.update, &keys, |cmd| {
            cmd.arg(&old.id)
                .arg(old.revision)
                .arg(&old_identity)
                .arg(&new_identity)
                .arg(&json)
                .arg(&self.keys.channel)
                .arg(lifetime_ms)
                .arg(seeds.len());
            for seed in &seeds {
                seed_args(cmd, seed);
            }
            cmd.arg(&removed);
        })
        .await
    }

    pub(super) async fn write_deleted_config(&self, old: &ModelConfig) -> Result<u64, WriteError> {
        let identity = old.identity();
        let counters = self.keys.counters(&old.id);
        let keys = self.keys.for_config_write(&counters);
        self.write_script(&self.scripts.delete, &keys, |cmd| {
            cmd.arg(&old.id)
                .arg(old.revision)
                .arg(&identity)
                .arg(&self.keys.channel);
        })
        .await
    }
}

/// One seed as `config_update.lua` reads it: the target budget's field, length, grid mode
/// and grid param, then the source budget's.
fn seed_args(cmd: &mut redis::Cmd, seed: &BudgetSeed) {
    let limit = |cmd: &mut redis::Cmd, spec: &LimitSpec| {
        let (mode, param, _) = spec.grid.map_or((0, 0, 0), |g| g.lua_args());
        cmd.arg(&spec.field).arg(spec.len_ms).arg(mode).arg(param);
    };
    limit(cmd, &seed.target);
    limit(cmd, &seed.source);
}
