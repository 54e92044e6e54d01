//! Keeping a replica's snapshot current with the store, and the store's configs alive.
//!
//! Each sync reads the store's config state and the changes since the snapshot's version
//! in one call, then follows `plan`: nothing to do, apply the changes (O(changed)),
//! reload in full (at start, after a gap in the change log, or to adopt another epoch),
//! wait (a replica is re-seeding), or re-seed: the store lost configs (its epoch marker
//! is gone or changed under us, or its version went back), so this replica keeps
//! enforcing its snapshot and puts it back (docs/redis-topologies.md, "Configs outlive
//! Redis's data").

use super::App;
use crate::limits::Snapshot;
use crate::metrics as m;
use crate::store::{ConfigChanges, ConfigState, ReseedOutcome, Seeding, Store, StoreError};
use std::sync::Arc;

/// Changes read per store call.
const CHANGES_PER_CALL: usize = 1000;

/// What a sync does, decided from the snapshot and the store's state alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The snapshot is current.
    Current,
    /// Apply the change log since the snapshot's version.
    Apply,
    /// Read every config (start, a gap in the log, another epoch to adopt).
    Reload,
    /// The store lost configs: put this snapshot back (`found`: the epoch found there).
    Reseed { found: Option<String> },
    /// Read what the store has, then re-seed it (configs from before epochs existed,
    /// or leftovers of a partial loss that this replica has no copy of).
    ReloadThenReseed,
    /// A replica is re-seeding: keep enforcing the snapshot until it is done.
    Wait,
    /// Nothing anywhere: an empty snapshot, no epoch yet.
    Empty,
}

/// `loaded`: the snapshot came from the store or a state file (not the empty start).
pub fn plan(snapshot: &Snapshot, loaded: bool, state: &ConfigState) -> Plan {
    let holds_configs = loaded && !snapshot.is_empty();
    if state.seeding == Seeding::InProgress {
        return Plan::Wait;
    }
    let Some(epoch) = &state.epoch else {
        return if holds_configs {
            Plan::Reseed { found: None }
        } else if state.configs > 0 {
            Plan::ReloadThenReseed
        } else {
            Plan::Empty
        };
    };
    let found = Some(epoch.clone());
    if state.seeding == Seeding::Abandoned {
        return if holds_configs {
            Plan::Reseed { found }
        } else {
            Plan::Wait
        };
    }
    if !state.intact {
        return if holds_configs {
            Plan::Reseed { found }
        } else {
            Plan::ReloadThenReseed
        };
    }
    if !loaded || snapshot.epoch.as_ref() != Some(epoch) {
        return Plan::Reload;
    }
    if state.version < snapshot.version {
        // Same epoch, older data: a failover to a replica that had not caught up.
        return Plan::Reseed { found };
    }
    if state.version == snapshot.version {
        Plan::Current
    } else if snapshot.version < state.floor {
        Plan::Reload
    } else {
        Plan::Apply
    }
}

impl<S: Store> App<S> {
    /// Brings the snapshot up to the store: one store call when nothing changed.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let result = self.sync_once().await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(m::SNAPSHOT_RELOADS, "result" => outcome).increment(1);
        result
    }

    async fn sync_once(&self) -> Result<(), StoreError> {
        // Every swap happens under this lock, so what a sync reads is never older than
        // the snapshot it replaces.
        let _guard = self.swap_lock.lock().await;
        let current = self.snapshot().as_ref().clone();
        let loaded = self.snapshot_loaded();
        let since = if loaded { current.version } else { 0 };
        let first = self.changes_since(since).await?;
        let mut plan = plan(&current, loaded, &first.state);
        if plan == Plan::Empty && loaded && current.is_empty() && current.epoch.is_none() {
            plan = Plan::Current;
        }
        if plan != Plan::Current {
            let kind = match plan {
                Plan::Apply => "incremental",
                Plan::Reload | Plan::ReloadThenReseed | Plan::Empty => "full",
                Plan::Reseed { .. } => "reseed",
                Plan::Wait | Plan::Current => "wait",
            };
            metrics::counter!(m::CONFIG_SYNCS, "kind" => kind).increment(1);
        }
        match plan {
            Plan::Current => self.confirm(),
            Plan::Wait => {
                tracing::info!(
                    "a replica is restoring configs to the store; enforcing this replica's snapshot meanwhile"
                );
            }
            Plan::Empty => self.publish(current.emptied().at(None, first.state.version)),
            Plan::Apply => {
                if let Some(next) = self.follow(current, first).await? {
                    self.publish(next);
                } else {
                    let next = self.load_all().await?;
                    self.publish(next);
                }
            }
            Plan::Reload => {
                let next = self.load_all().await?;
                self.publish(next);
            }
            Plan::Reseed { found } => self.reseed(&current, found).await?,
            Plan::ReloadThenReseed => {
                let left = self.load_all().await?;
                tracing::warn!(
                    configs = left.len(),
                    "store configs carry no intact epoch; re-seeding them"
                );
                self.reseed(&left, first.state.epoch).await?;
            }
        }
        Ok(())
    }

    async fn changes_since(&self, since: u64) -> Result<ConfigChanges, StoreError> {
        super::timed(
            "config_sync",
            self.store.config_changes(since, CHANGES_PER_CALL),
        )
        .await
    }

    /// `base` with the change log applied, page by page, from `first`; None when the
    /// log cannot bring it there (the epoch changed, or a gap opened meanwhile).
    async fn follow(
        &self,
        base: Snapshot,
        mut changes: ConfigChanges,
    ) -> Result<Option<Snapshot>, StoreError> {
        let mut next = base;
        loop {
            let state = &changes.state;
            if state.epoch != next.epoch
                || !state.intact
                || state.seeding != Seeding::None
                || next.version < state.floor
            {
                return Ok(None);
            }
            metrics::counter!(m::CONFIG_CHANGES_APPLIED).increment(changes.changed.len() as u64);
            let through = changes.through.max(next.version);
            let reached = through >= state.version;
            next = next.with_changes(through, changes.changed);
            if reached {
                return Ok(Some(next));
            }
            changes = self.changes_since(next.version).await?;
        }
    }

    /// Every config, read page by page, then brought current by the change log since the
    /// version the read started at (pages may miss or repeat configs written meanwhile).
    async fn load_all(&self) -> Result<Snapshot, StoreError> {
        for _ in 0..3 {
            let start = self.changes_since(0).await?.state;
            let previous = self.snapshot().clone();
            let compile = Snapshot::reloader(start.epoch.clone(), previous.clone());
            let compiled = self.store.load_configs(Arc::new(compile));
            let compiled = super::timed("scan_configs", compiled).await?;
            let base = Snapshot::reloaded(start.epoch, start.version, compiled, &previous);
            let changes = self.changes_since(start.version).await?;
            if changes.state.version == start.version && changes.state.epoch == base.epoch {
                return Ok(base);
            }
            if let Some(current) = self.follow(base, changes).await? {
                return Ok(current);
            }
        }
        Err(StoreError::Unavailable(
            "the store's configs kept changing epoch during a full load".into(),
        ))
    }

    async fn reseed(&self, snapshot: &Snapshot, found: Option<String>) -> Result<(), StoreError> {
        metrics::counter!(m::STORE_DATA_LOSS).increment(1);
        tracing::error!(
            found_epoch = found.as_deref().unwrap_or("none"),
            known_epoch = snapshot.epoch.as_deref().unwrap_or("none"),
            configs = snapshot.len(),
            "the store lost configs (restart without persistence, flush, eviction or failover); \
             enforcing this replica's snapshot and restoring it (counters restart from zero)"
        );
        let configs = snapshot.configs().cloned().collect();
        let outcome = super::timed(
            "reseed",
            self.store
                .reseed(found.as_deref(), configs, snapshot.version),
        )
        .await?;
        match outcome {
            ReseedOutcome::Seeded { epoch, version } => {
                metrics::counter!(m::CONFIG_RESEEDS, "result" => "seeded").increment(1);
                tracing::warn!(%epoch, version, configs = snapshot.len(), "store re-seeded from this replica's snapshot");
                self.publish(snapshot.at(Some(epoch), version));
            }
            ReseedOutcome::Adopt => {
                metrics::counter!(m::CONFIG_RESEEDS, "result" => "adopted").increment(1);
                tracing::info!(
                    "another replica restores the store's configs; adopting them when done"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::create_config;
    use serde_json::json;

    fn state(epoch: Option<&str>, version: u64) -> ConfigState {
        ConfigState {
            epoch: epoch.map(str::to_string),
            version,
            intact: true,
            seeding: Seeding::None,
            floor: 0,
            configs: 1,
        }
    }

    fn snapshot(epoch: Option<&str>, version: u64, configs: usize) -> Snapshot {
        let configs = (0..configs)
            .map(|i| {
                create_config(
                    serde_json::from_value(json!({"model_name": format!("m{i}")})).unwrap(),
                    chrono::Utc::now(),
                )
                .unwrap()
            })
            .collect();
        Snapshot::build(version, configs).at(epoch.map(str::to_string), version)
    }

    #[test]
    fn follows_one_epoch() {
        let s = snapshot(Some("e1"), 10, 2);
        assert_eq!(plan(&s, true, &state(Some("e1"), 10)), Plan::Current);
        assert_eq!(plan(&s, true, &state(Some("e1"), 12)), Plan::Apply);
        let mut gap = state(Some("e1"), 12);
        gap.floor = 11;
        assert_eq!(
            plan(&s, true, &gap),
            Plan::Reload,
            "the log lost changes we need"
        );
        assert_eq!(
            plan(&s, false, &state(Some("e1"), 10)),
            Plan::Reload,
            "start"
        );
        assert_eq!(plan(&s, true, &state(Some("e2"), 3)), Plan::Reload, "adopt");
    }

    #[test]
    fn loss_is_told_from_deletion() {
        let s = snapshot(Some("e1"), 10, 2);
        let reseed = |found: Option<&str>| Plan::Reseed {
            found: found.map(str::to_string),
        };
        assert_eq!(plan(&s, true, &state(None, 0)), reseed(None), "flushed");
        let mut evicted = state(Some("e1"), 10);
        evicted.intact = false;
        assert_eq!(plan(&s, true, &evicted), reseed(Some("e1")), "evicted");
        assert_eq!(
            plan(&s, true, &state(Some("e1"), 7)),
            reseed(Some("e1")),
            "rolled back by a failover"
        );
        // Deleting every config keeps the epoch: nothing is restored.
        let emptied = snapshot(Some("e1"), 10, 0);
        assert_eq!(plan(&emptied, true, &state(Some("e1"), 11)), Plan::Apply);
        let mut flushed = state(None, 0);
        flushed.configs = 0;
        assert_eq!(plan(&emptied, true, &flushed), Plan::Empty);
    }

    #[test]
    fn waits_for_a_reseed_and_takes_over_an_abandoned_one() {
        let s = snapshot(Some("e1"), 10, 2);
        let mut seeding = state(Some("e2"), 20);
        seeding.seeding = Seeding::InProgress;
        assert_eq!(plan(&s, true, &seeding), Plan::Wait);
        seeding.seeding = Seeding::Abandoned;
        assert_eq!(
            plan(&s, true, &seeding),
            Plan::Reseed {
                found: Some("e2".into())
            }
        );
        assert_eq!(plan(&Snapshot::empty(), false, &seeding), Plan::Wait);
    }

    #[test]
    fn a_fresh_replica_claims_nothing_and_upgrades_old_data() {
        let fresh = Snapshot::empty();
        let mut nothing = state(None, 0);
        nothing.configs = 0;
        assert_eq!(plan(&fresh, false, &nothing), Plan::Empty);
        assert_eq!(
            plan(&fresh, false, &state(None, 5)),
            Plan::ReloadThenReseed,
            "configs from before epochs"
        );
        let mut partial = state(Some("e1"), 5);
        partial.intact = false;
        assert_eq!(plan(&fresh, false, &partial), Plan::ReloadThenReseed);
    }
}
