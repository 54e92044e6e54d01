//! With `--state-file`, the journal of local admissions is kept beside it
//! (`<state-file>.local`), so that a replica restarted while the store does not answer
//! still charges what it admitted before, and goes on from its share as it stood: the
//! file also holds this replica's id and next sequence number (ids stay unique), the
//! replica count, and the usage last seen of the limits it had checked lately.
//! Written atomically at most every 100 ms after a change, and on shutdown.

use super::LocalShare;
use super::journal::{Entry, Journal};
use crate::limits::Snapshot;
use crate::state_file;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

const WRITE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Serialize, Deserialize)]
struct JournalFile {
    replica_id: String,
    next_seq: u64,
    replicas: u64,
    entries: Vec<Entry>,
    /// Config id → (used, when) of each of its limits, as last seen (when 0: never).
    seen: Vec<(String, Vec<(i64, i64)>)>,
}

/// Where the journal is kept for `--state-file` `state_file`.
pub fn path_beside(state_file: &Path) -> PathBuf {
    let mut name = state_file.as_os_str().to_owned();
    name.push(".local");
    PathBuf::from(name)
}

impl LocalShare {
    /// Keeps the journal in `path`, starting from what it holds (the usage it saw
    /// recorded into `snapshot`'s configs). A file that cannot be read is an error:
    /// starting without it would leave admissions uncharged.
    pub fn keep_in(&mut self, path: PathBuf, snapshot: &Snapshot) -> Result<(), String> {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: JournalFile = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("journal {} is not valid: {e}", path.display()))?;
                for (id, limits) in &file.seen {
                    if let Some(c) = snapshot.get(id) {
                        for (i, &(used, at)) in limits.iter().enumerate() {
                            if at != 0 && c.last_seen(i).is_none() {
                                c.seen().record(i, used, at);
                            }
                        }
                    }
                }
                if !file.entries.is_empty() {
                    tracing::info!(entries = file.entries.len(), path = %path.display(),
                        "local admissions of an earlier run: charged once the store answers");
                }
                self.replica_id = file.replica_id;
                self.set_replicas(file.replicas);
                let state = self.state.get_mut();
                state.next_seq = file.next_seq;
                // Charged entries were settling when it stopped: the store has them.
                state.journal =
                    Journal::from_entries(file.entries.into_iter().filter(|e| !e.charged));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read journal {}: {e}", path.display())),
        }
        self.file = Some(path);
        Ok(())
    }

    /// Writes the journal after every change (at most every 100 ms). Returns at once
    /// without a file; runs until the task is dropped.
    pub async fn persist_forever(&self, snapshot: impl Fn() -> std::sync::Arc<Snapshot>) {
        if self.file.is_none() {
            return;
        }
        loop {
            self.changed.notified().await;
            tokio::time::sleep(WRITE_EVERY).await;
            self.write(&snapshot());
        }
    }

    /// Writes the journal now (also at shutdown).
    pub fn write(&self, snapshot: &Snapshot) {
        let Some(path) = &self.file else { return };
        let (entries, next_seq) = {
            let state = self.state.lock();
            (
                state.journal.entries().cloned().collect::<Vec<_>>(),
                state.next_seq,
            )
        };
        let mut ids = self.recent.current();
        ids.extend(entries.iter().flat_map(|e| e.configs.iter().cloned()));
        ids.sort();
        ids.dedup();
        let seen = ids
            .into_iter()
            .filter_map(|id| {
                let c = snapshot.get(&id)?;
                let limits = (0..c.limits().len())
                    .map(|i| c.last_seen(i).unwrap_or((0, 0)))
                    .collect();
                Some((id, limits))
            })
            .collect();
        let file = JournalFile {
            replica_id: self.replica_id.clone(),
            next_seq,
            replicas: self.replicas.load(Ordering::Relaxed),
            entries,
            seen,
        };
        if let Err(e) = state_file::write_atomically(path, &file) {
            tracing::error!(error = %e, "cannot write the journal of local admissions");
        }
    }
}
