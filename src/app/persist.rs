//! With Redis, `--state-file` is this replica's local copy of its snapshot: written
//! atomically after changes (at most once a second), read at start. A fleet restarted
//! onto an empty Redis enforces and restores its configs from it (docs/redis-topologies.md,
//! "Configs outlive Redis's data").

use super::App;
use crate::state_file::{self, StateFile};
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Snapshots written at most this often.
const WRITE_EVERY: Duration = Duration::from_secs(1);

impl<S: Store> App<S> {
    /// Starts from the copy at `path` if there is one (enforced at once, and synced
    /// with the store from its version), and keeps it written from now on.
    pub fn keep_snapshot_in(&mut self, path: PathBuf) -> Result<(), String> {
        if let Some(state) = state_file::open(&path)? {
            tracing::info!(
                configs = state.configs.len(),
                version = state.version,
                path = %path.display(),
                "enforcing the configs of the state file until the store is reached"
            );
            let snapshot = self
                .snapshot()
                .rebuilt(state.version, state.configs)
                .at(state.epoch, state.version);
            self.publish(snapshot);
        }
        self.snapshot_file = Some(path);
        Ok(())
    }

    /// Writes the snapshot to the state file whenever it changed (at most every
    /// second). Runs until the task is dropped; returns at once without a state file.
    pub async fn persist_forever(self: Arc<Self>) {
        let Some(path) = self.snapshot_file.clone() else {
            return;
        };
        let mut written: Option<(Option<String>, u64)> = None;
        loop {
            self.published.notified().await;
            tokio::time::sleep(WRITE_EVERY).await;
            let snapshot = self.snapshot().clone();
            let at = (snapshot.epoch.clone(), snapshot.version);
            if written.as_ref() == Some(&at) {
                continue;
            }
            let path = path.clone();
            let result = tokio::task::spawn_blocking(move || {
                let state = StateFile {
                    version: snapshot.version,
                    epoch: snapshot.epoch.clone(),
                    configs: snapshot.configs().cloned().collect(),
                };
                state_file::write_atomically(&path, &state)
            })
            .await;
            match result {
                Ok(Ok(())) => written = Some(at),
                Ok(Err(e)) => tracing::error!(error = %e, "cannot write the snapshot's state file"),
                Err(e) => tracing::error!(error = %e, "state file writer failed"),
            }
        }
    }
}
