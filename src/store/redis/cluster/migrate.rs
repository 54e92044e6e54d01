//! Counters moved from another key layout (Redis Cluster). Earlier releases kept each
//! config's counters in the slot of its id (`c:{<id>}`, `--cluster-counter-slots 0`);
//! the default keeps them in a few counter slots (`Keys`), and a changed number of
//! counter slots moves most configs to another. The config plane's slot records the
//! layout the counters were last moved to (`Keys::counter_layout`; absent: one slot per
//! config). At start, when that differs from this replica's, a background task moves
//! each config's hash of the recorded layout: it claims it (`RENAME` to `<key>:moving`,
//! same slot, so of replicas starting together one wins), reads it (`HGETALL`), adds it
//! into the config's counters here (`lua/counters_migrate.lua`: budgets of the same
//! period summed, windows merged by sub-bucket, so checks already counted here stay
//! counted), and deletes it; then records this layout, so later starts skip the scan.
//!
//! Not atomic across the two slots (a script's keys share one slot): until a config's
//! move, checks here do not see its old usage, and what replicas still on the other
//! layout count after the move is not moved. A rolling switch therefore splits each
//! limit's count between the two layouts for its duration (docs/redis-cpu.md,
//! "Changing the layout").

use super::super::connection::Master;
use super::super::decode::unavailable;
use super::super::keys::Keys;
use super::super::packed_limits::packed_limits;
use super::super::scripts::{COUNTERS_MIGRATE, Lua, invoke};
use crate::limits::CompiledConfig;
use crate::store::StoreError;
use crate::store::config_log::parse_config;
use std::sync::Arc;
use std::time::Duration;

/// Configs read per `HSCAN` page.
const PAGE: usize = 500;

/// Moves the counters of the earlier layout until it has succeeded once (retried every
/// second while Redis cannot be reached).
pub(crate) async fn migrate_counters(master: Arc<Master>, keys: Keys, timeout: Duration) {
    let lua = Lua::new(COUNTERS_MIGRATE);
    loop {
        match migrate_once(&master, &keys, &lua, timeout).await {
            Ok(0) => return,
            Ok(moved) => {
                tracing::info!(
                    configs = moved,
                    "moved counters from the earlier key layout into this one"
                );
                return;
            }
            Err(e) => tracing::debug!(error = %e, "counter migration: will try again"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn bounded<T>(
    timeout: Duration,
    f: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(unavailable),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}

/// One pass over every config; the number of configs whose counters moved.
async fn migrate_once(
    master: &Master,
    keys: &Keys,
    lua: &Lua,
    timeout: Duration,
) -> Result<usize, StoreError> {
    let mut conn = master.connection()?;
    let mark = keys.counter_layout_mark();
    let recorded: Option<String> = bounded(
        timeout,
        redis::cmd("GET")
            .arg(&keys.counter_layout)
            .query_async(&mut conn),
    )
    .await?;
    let from_slots = match recorded.as_deref() {
        None => 0,
        Some(r) => match r.strip_prefix("slots:").and_then(|n| n.parse::<u16>().ok()) {
            Some(n) => n,
            None => {
                tracing::warn!(
                    recorded = r,
                    "unknown counter layout recorded: not moving counters"
                );
                return Ok(0);
            }
        },
    };
    let source = keys.clone().with_counter_slots(from_slots);
    if source.counter_layout_mark() == mark {
        return Ok(0);
    }
    let (mut cursor, mut moved) = (0u64, 0);
    loop {
        let (next, page): (u64, Vec<(String, String)>) = bounded(
            timeout,
            redis::cmd("HSCAN")
                .arg(&keys.configs)
                .arg(cursor)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn),
        )
        .await?;
        for (id, json) in &page {
            if id.starts_with("__") {
                continue;
            }
            let Some(compiled) = parse_config(json).and_then(|c| CompiledConfig::compile(c).ok())
            else {
                continue;
            };
            let (from, to) = (
                source.counters(&compiled.config.id),
                keys.counters(&compiled.config.id),
            );
            if from == to {
                continue;
            }
            // Claimed by one replica; a claim left by one that stopped half-way is read too.
            let moving = format!("{from}:moving");
            let mut rename = redis::cmd("RENAME");
            rename.arg(&from).arg(&moving);
            match tokio::time::timeout(timeout, rename.query_async::<()>(&mut conn)).await {
                Err(_) => return Err(StoreError::Timeout(timeout)),
                // Not there ("no such key"): moved already, or never written.
                Ok(Err(e)) if !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped()) => {
                }
                Ok(Err(e)) => return Err(unavailable(e)),
                Ok(Ok(())) => {}
            }
            let fields: Vec<Vec<u8>> = bounded(
                timeout,
                redis::cmd("HGETALL").arg(&moving).query_async(&mut conn),
            )
            .await?;
            if fields.is_empty() {
                continue;
            }
            let fill = |cmd: &mut redis::Cmd| {
                cmd.arg(1).arg(&to).arg(&**packed_limits(&compiled));
                for f in &fields {
                    cmd.arg(f);
                }
            };
            let _: i64 = bounded(timeout, invoke(&mut conn, lua, fill)).await?;
            let _: i64 = bounded(
                timeout,
                redis::cmd("DEL").arg(&moving).query_async(&mut conn),
            )
            .await?;
            moved += 1;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let _: () = bounded(
        timeout,
        redis::cmd("SET")
            .arg(&keys.counter_layout)
            .arg(&mark)
            .query_async(&mut conn),
    )
    .await?;
    Ok(moved)
}
