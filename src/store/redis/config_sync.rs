//! How replicas follow the configs in Redis (`store::ConfigLog`): the state and change
//! log in one script call, a full load by `HSCAN` pages, the re-seed of a Redis that
//! lost its configs, and the notifications of the change listener (`listener`).

use super::RedisStore;
use super::decode::{corrupt, int, text};
use super::scripts::invoke;
use crate::model::ModelConfig;
use crate::store::{
    ConfigChanges, ConfigLog, ConfigState, Prepare, ReseedOutcome, Seeding, StoreError,
};
use redis::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Configs per `HSCAN` page of a full load, and per re-seed chunk.
const PAGE: usize = 1000;
/// A re-seeding replica that sends nothing for this long is taken over by another.
const RESEED_LEASE: Duration = Duration::from_secs(30);

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
            } else if let Some(c) = crate::store::config_log::parse_config(&json) {
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
        let (next, fields) = self.scan_page(cursor).await?;
        Ok((next, parse_page(&fields, &|c| c)))
    }

    /// Each page is parsed on the blocking pool while the next one is read: parsing is
    /// most of a full load (a million configs kept one core busy for most of 20 s), and
    /// Redis serves the next page meanwhile. At most `PARSING` pages wait to be parsed,
    /// so the raw JSON held at once stays a few pages.
    async fn load_configs<T: Send + 'static>(
        &self,
        prepare: Prepare<T>,
    ) -> Result<Vec<T>, StoreError> {
        const PARSING: usize = 3;
        let joined = |r: Result<Vec<T>, tokio::task::JoinError>| {
            r.map_err(|e| StoreError::Unavailable(format!("parsing configs failed: {e}")))
        };
        let mut parsing = std::collections::VecDeque::new();
        let mut configs = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, fields) = self.scan_page(cursor).await?;
            let prepare = prepare.clone();
            parsing.push_back(tokio::task::spawn_blocking(move || {
                parse_page(&fields, &*prepare)
            }));
            while parsing.len() > PARSING {
                let page = parsing.pop_front().expect("not empty");
                configs.extend(joined(page.await)?);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for page in parsing {
            configs.extend(joined(page.await)?);
        }
        Ok(configs)
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
                    Ok((c.id.to_string(), c.identity(), json))
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

impl RedisStore {
    /// One `HSCAN` page of the configs hash, unparsed: (next cursor, (id, JSON) pairs).
    async fn scan_page(&self, cursor: u64) -> Result<(u64, Vec<(String, String)>), StoreError> {
        let mut conn = self.connection()?;
        self.bounded(
            self.bulk_timeout,
            redis::cmd("HSCAN")
                .arg(&self.keys.configs)
                .arg(cursor)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn),
        )
        .await
    }
}

/// A page's configs (markers, `__…` fields, are not configs).
fn parse_page<T: Send>(
    fields: &[(String, String)],
    prepare: &(dyn Fn(ModelConfig) -> T + Send + Sync),
) -> Vec<T> {
    crate::store::parse_configs_with(
        fields
            .iter()
            .filter(|(id, _)| !id.starts_with("__"))
            .map(|(_, json)| json.as_str()),
        prepare,
    )
}
