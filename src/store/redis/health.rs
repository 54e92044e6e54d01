//! The store's health on Redis (`store::Health`): readiness (reachable, every script
//! loaded, and able to keep what tollgate writes: its eviction policy, and whether it
//! accepts writes at all; Redis settings are checked, not assumed), and Redis's clock.

use super::RedisStore;
use super::decode::corrupt;
use crate::store::{Health, StoreError};
use chrono::{DateTime, Utc};

/// What `maxmemory-policy` means for tollgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionRisk {
    /// `noeviction`, or the policy cannot be read (`CONFIG` disabled).
    None,
    /// `volatile-*`: idle counters (they have TTLs) may be evicted early; configs not.
    Counters(String),
    /// `allkeys-*`: configs themselves may be evicted.
    Configs(String),
}

pub fn eviction_risk(policy: &str) -> EvictionRisk {
    if policy.starts_with("allkeys-") {
        EvictionRisk::Configs(policy.to_string())
    } else if policy.starts_with("volatile-") {
        EvictionRisk::Counters(policy.to_string())
    } else {
        EvictionRisk::None
    }
}

/// The refusal for an evicting Redis, with the fix in it.
pub fn evicting_message(policy: &str) -> String {
    format!(
        "Redis runs with maxmemory-policy {policy}: under memory pressure it evicts tollgate's \
         configs and counters (limits then restart from zero). Set `maxmemory-policy noeviction` \
         (or a volatile-* policy) on Redis, or pass --allow-evicting-redis to run anyway"
    )
}

impl RedisStore {
    /// `maxmemory-policy`, or None when Redis does not say (`CONFIG` renamed or denied).
    pub async fn eviction_policy(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.connection()?;
        let reply: redis::RedisResult<Vec<String>> = match tokio::time::timeout(
            self.timeout,
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut conn),
        )
        .await
        {
            Ok(reply) => reply,
            Err(_) => return Err(StoreError::Timeout(self.timeout)),
        };
        match reply {
            Ok(pair) => Ok(pair.get(1).cloned()),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                Err(StoreError::Unavailable(e.to_string()))
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read maxmemory-policy");
                Ok(None)
            }
        }
    }

    /// Refuses an `allkeys-*` policy unless allowed; a warning for `volatile-*`.
    pub async fn check_eviction_policy(&self) -> Result<(), StoreError> {
        match self.eviction_policy().await?.as_deref().map(eviction_risk) {
            Some(EvictionRisk::Configs(policy)) if !self.allow_evicting => {
                Err(StoreError::Unavailable(evicting_message(&policy)))
            }
            Some(EvictionRisk::Counters(policy)) => {
                if self
                    .warned_volatile
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    return Ok(());
                }
                tracing::warn!(
                    policy,
                    "Redis may evict idle counters early under memory pressure (maxmemory-policy \
                     volatile-*): their limits then restart from zero; noeviction keeps them"
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// With `--redis-wait-replicas N`: warns (once per master) when the master has fewer
    /// than N connected replicas, so every `WAIT` would fall short.
    pub async fn check_replica_count(&self) -> Result<(), StoreError> {
        if self.master.wait_replicas() == 0 || self.shards.is_some() {
            return Ok(());
        }
        let mut conn = self.connection()?;
        let info: String = self
            .bounded(
                self.timeout,
                redis::cmd("INFO").arg("replication").query_async(&mut conn),
            )
            .await?;
        let connected = super::replication::parse_connected_replicas(&info);
        self.master.check_replica_count(connected);
        Ok(())
    }

    /// A tiny write that fails while Redis rejects writes (OOM at maxmemory with
    /// noeviction, a read-only replica, MISCONF after a failed snapshot).
    pub async fn probe_writes(&self) -> Result<(), StoreError> {
        let mut conn = self.connection()?;
        let reply: Result<(), StoreError> = self
            .bounded(
                self.timeout,
                redis::cmd("SET")
                    .arg(&self.keys.probe)
                    .arg(1)
                    .arg("PX")
                    .arg(10_000)
                    .query_async(&mut conn),
            )
            .await;
        match reply {
            Err(StoreError::Unavailable(e)) if !e.contains("connect") && !e.contains("broken") => {
                Err(StoreError::Unavailable(format!(
                    "Redis rejects writes: {e}"
                )))
            }
            other => other,
        }
    }
}

impl Health for RedisStore {
    async fn announce_replica(&self, id: &str, ttl_ms: u64) -> Result<u64, StoreError> {
        let mut conn = self.connection()?;
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(1).arg(&self.keys.replicas).arg(id).arg(ttl_ms);
        };
        self.bounded(
            self.timeout,
            super::scripts::invoke(&mut conn, &self.scripts.replicas, fill),
        )
        .await
    }

    /// Reachable, every script present in the script cache (loaded if not), no
    /// `allkeys-*` eviction (unless allowed), and accepting writes.
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection()?;
        let hashes: Vec<&str> = self.scripts.all().iter().map(|s| s.get_hash()).collect();
        let present: Vec<bool> = self
            .bounded(
                self.timeout,
                redis::cmd("SCRIPT")
                    .arg("EXISTS")
                    .arg(&hashes)
                    .query_async(&mut conn),
            )
            .await?;
        for (script, loaded) in self.scripts.all().into_iter().zip(present) {
            if !loaded {
                self.bounded(self.timeout, script.prepare_invoke().load_async(&mut conn))
                    .await?;
            }
        }
        let writable = async {
            self.check_eviction_policy().await?;
            self.probe_writes().await
        }
        .await;
        if writable.is_ok() {
            self.check_replica_count().await?;
        }
        metrics::gauge!(crate::metrics::STORE_WRITABLE).set(if writable.is_ok() {
            1.0
        } else {
            0.0
        });
        if let Err(e) = &writable
            && let Some(more) = self
                .writes_refused
                .allow(chrono::Utc::now().timestamp_millis())
        {
            tracing::error!(error = %e, also_since_last_line = more, "Redis cannot keep tollgate's writes; not ready");
        }
        writable
    }

    async fn clock(&self) -> Result<DateTime<Utc>, StoreError> {
        let mut conn = self.connection()?;
        let (secs, micros): (i64, i64) = self
            .bounded(self.timeout, redis::cmd("TIME").query_async(&mut conn))
            .await?;
        DateTime::from_timestamp(secs, (micros * 1000) as u32)
            .ok_or_else(|| corrupt(format_args!("TIME answered {secs} s {micros} µs")))
    }

    fn replication_shortfall(&self) -> Option<String> {
        self.master.replication_shortfall()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(eviction_risk("noeviction"), EvictionRisk::None);
        assert_eq!(
            eviction_risk("allkeys-lru"),
            EvictionRisk::Configs("allkeys-lru".into())
        );
        assert_eq!(
            eviction_risk("volatile-ttl"),
            EvictionRisk::Counters("volatile-ttl".into())
        );
        let msg = evicting_message("allkeys-lfu");
        assert!(msg.contains("noeviction") && msg.contains("--allow-evicting-redis"));
    }
}
