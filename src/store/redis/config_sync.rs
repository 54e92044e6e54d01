//! How replicas follow the configs in Redis (`store::ConfigLog`): the state and change
//! log in one script call, a full load by `HSCAN` pages, the re-seed of a Redis that
//! lost its configs, and the notifications of the change listener (`listener`).

use super::RedisStore;
use super::decode::{corrupt, int, text};
use super::scripts::invoke;
use crate::model::ModelConfig;
use crate::store::{ConfigChanges, ConfigLog, ConfigState, ReseedOutcome, Seeding, StoreError};
use redis::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Configs per `HSCAN` page of a full load, and per re-seed chunk.
const PAGE: usize = 1000;
/// A re-seeding replica that sends nothing for this long is taken over by another.
const RESEED_LEASE: Duration = Duration::from_secs(30);

fn parse_config(json: &str) -> Option<ModelConfig> {
    match serde_json::from_str(json) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "skipping unreadable config in redis");
            None
        }
    }
}

impl ConfigLog for RedisStore {
    async fn config_changes(&self, since: u64, limit: usize) -> Result<ConfigChanges, StoreError> {
        let keys = self.keys.config_plane();
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(keys.len()).arg(&keys).arg(since).arg(limit.max(1));
        };
        let mut conn = self.connection()?;
        // The sync loop may wait longer than a check: its first call may also establish
        // the connection (a TLS handshake can take longer than a check may).
        let reply: Vec<Value> = self
            .bounded(
                self.bulk_timeout,
                invoke(&mut conn, &self.scripts.sync, fill),
            )
            .await?;
        if reply.len() < 7 || reply.len().is_multiple_of(2) {
            return Err(corrupt("config_sync answered the wrong number of values"));
        }
        let epoch = text(&reply[0])?;
        let state = ConfigState {
            epoch: (!epoch.is_empty()).then_some(epoch),
            version: int(&reply[1])? as u64,
            intact: int(&reply[2])? == 1,
            seeding: match int(&reply[3])? {
                0 => Seeding::None,
                1 => Seeding::InProgress,
                _ => Seeding::Abandoned,
            },
            floor: int(&reply[4])? as u64,
            configs: int(&reply[5])? as u64,
        };
        let through = int(&reply[6])? as u64;
        let mut changed = Vec::with_capacity((reply.len() - 7) / 2);
        for pair in reply[7..].chunks_exact(2) {
            let id = text(&pair[0])?;
            let json = text(&pair[1])?;
            if json.is_empty() {
                changed.push((id, None));
            } else if let Some(c) = parse_config(&json) {
                changed.push((id, Some(c)));
            }
        }
        Ok(ConfigChanges {
            state,
            changed,
            through,
        })
    }

    async fn scan_configs(&self, cursor: u64) -> Result<(u64, Vec<ModelConfig>), StoreError> {
        let mut conn = self.connection()?;
        let (next, fields): (u64, Vec<(String, String)>) = self
            .bounded(
                self.bulk_timeout,
                redis::cmd("HSCAN")
                    .arg(&self.keys.configs)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut conn),
            )
            .await?;
        let configs = crate::store::parse_configs(
            fields
                .iter()
                .filter(|(id, _)| !id.starts_with("__"))
                .map(|(_, json)| json.as_str()),
        );
        Ok((next, configs))
    }

    /// Claims the re-seed (one replica wins), writes the configs in chunks, then marks
    /// the new epoch. Other replicas wait while it runs, and adopt it after.
    async fn reseed(
        &self,
        found: Option<&str>,
        configs: Vec<ModelConfig>,
        min_version: u64,
    ) -> Result<ReseedOutcome, StoreError> {
        let keys = self.keys.config_plane();
        let epoch = uuid::Uuid::new_v4().to_string();
        let lease = RESEED_LEASE.as_millis() as u64;
        let mut conn = self.connection()?;
        let begin = |cmd: &mut redis::Cmd| {
            cmd.arg(keys.len())
                .arg(&keys)
                .arg(found.unwrap_or(""))
                .arg(&epoch)
                .arg(min_version)
                .arg(lease);
        };
        let reply: Vec<Value> = self
            .bounded(
                self.bulk_timeout,
                invoke(&mut conn, &self.scripts.reseed_begin, begin),
            )
            .await?;
        if int(reply.first().ok_or_else(|| corrupt("empty answer"))?)? != 1 {
            return Ok(ReseedOutcome::Adopt);
        }
        let version = int(reply.get(1).ok_or_else(|| corrupt("no version"))?)? as u64;
        for chunk in configs.chunks(PAGE) {
            let rows: Vec<(String, String, String)> = chunk
                .iter()
                .map(|c| {
                    let json = serde_json::to_string(c).map_err(corrupt)?;
                    Ok((c.id.clone(), c.identity(), json))
                })
                .collect::<Result<_, StoreError>>()?;
            let fill = |cmd: &mut redis::Cmd| {
                cmd.arg(keys.len())
                    .arg(&keys)
                    .arg(&epoch)
                    .arg(version)
                    .arg(lease);
                for (id, identity, json) in &rows {
                    cmd.arg(id).arg(identity).arg(json);
                }
            };
            let reply: Vec<i64> = self
                .bounded(
                    self.bulk_timeout,
                    invoke(&mut conn, &self.scripts.reseed_chunk, fill),
                )
                .await?;
            if reply.first() != Some(&1) {
                return Ok(ReseedOutcome::Adopt);
            }
        }
        let end = |cmd: &mut redis::Cmd| {
            cmd.arg(keys.len())
                .arg(&keys)
                .arg(&epoch)
                .arg(&self.keys.channel);
        };
        let reply: Vec<i64> = self
            .bounded(
                self.bulk_timeout,
                invoke(&mut conn, &self.scripts.reseed_end, end),
            )
            .await?;
        match reply.as_slice() {
            [1, version] => Ok(ReseedOutcome::Seeded {
                epoch,
                version: *version as u64,
            }),
            _ => Ok(ReseedOutcome::Adopt),
        }
    }

    fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }
}
