//! `--on-store-error local`: limits that hold while the store does not answer.
//!
//! Each replica announces itself in the store every few seconds and learns how many
//! replicas are alive (`N`, `replay::run_forever`). It keeps each limit's usage as last
//! seen (`CompiledConfig::seen`: every check answer, and a periodic read of the limits it
//! checked in the last minute, `refresh`). While the store fails or times out, a check is
//! decided here, all or nothing, against this replica's share of each enforcing limit:
//! `(max − used) / N`, less what this replica already admitted on its own since. What it
//! admits is journaled (`journal`, bounded; kept in a file beside `--state-file`,
//! `persist`) and charged to the store exactly once when it answers again
//! (`replay`), at its reservation time. With N right and `used` current, the fleet
//! admits at most `max − used` during an outage of any length (docs/local-fallback.md
//! says what weakens that).

pub mod journal;
mod persist;
mod recent;
pub mod replay;

pub use self::persist::path_beside as journal_beside;

use self::journal::{Entry, Journal};
use crate::limits::window::admits;
use crate::limits::{CompiledConfig, LimitKind};
use crate::metrics as m;
use crate::store::Amounts;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// After this replica charged the store with its local admissions, it goes on deciding
/// here this long (its charged admissions still counting against its share) before its
/// checks go to the store again: the other replicas charge theirs meanwhile (each tries
/// every 250 ms), so the store does not admit the room they already used.
pub const SETTLE_MS: i64 = 1_000;

/// How a check was decided here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// This replica's share of a limit of this kind has no room for the amount.
    Refused(LimitKind),
    /// The journal holds `--local-journal-max` entries: refused, nothing uncharged.
    JournalFull,
    /// This replica never counted the replicas alive: it cannot know its share.
    NoReplicaCount,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Admitted => "admitted",
            Verdict::Refused(_) => "refused",
            Verdict::JournalFull => "journal_full",
            Verdict::NoReplicaCount => "no_replica_count",
        }
    }
}

struct State {
    journal: Journal,
    next_seq: u64,
}

pub struct LocalShare {
    /// This replica in the registry, and the prefix of its journal entries' ids.
    pub replica_id: String,
    /// Replicas alive when the store last answered the registry; 0: never counted.
    replicas: AtomicU64,
    state: Mutex<State>,
    /// One replay at a time; a check that finds one running decides here.
    replaying: tokio::sync::Mutex<()>,
    /// Until when (local Unix ms) checks are still decided here after a replay; 0: not
    /// settling.
    settle_until: AtomicI64,
    recent: recent::Recent,
    max_entries: usize,
    /// Where the journal is kept (beside `--state-file`), if anywhere.
    file: Option<PathBuf>,
    /// Poked when the journal changed, for the file writer.
    changed: tokio::sync::Notify,
    pub refresh_ms: u64,
}

impl Default for LocalShare {
    fn default() -> Self {
        LocalShare::new(100_000, 1000)
    }
}

impl LocalShare {
    pub fn new(max_entries: usize, refresh_ms: u64) -> Self {
        LocalShare {
            replica_id: uuid::Uuid::new_v4().simple().to_string(),
            replicas: AtomicU64::new(0),
            state: Mutex::new(State {
                journal: Journal::default(),
                next_seq: 0,
            }),
            replaying: tokio::sync::Mutex::new(()),
            settle_until: AtomicI64::new(0),
            recent: recent::Recent::default(),
            max_entries: max_entries.max(1),
            file: None,
            changed: tokio::sync::Notify::new(),
            refresh_ms,
        }
    }

    /// Replicas alive as last counted (0: never).
    pub fn replicas(&self) -> u64 {
        self.replicas.load(Ordering::Relaxed)
    }

    pub fn set_replicas(&self, n: u64) {
        self.replicas.store(n, Ordering::Relaxed);
        metrics::gauge!(m::REPLICAS_SEEN).set(n as f64);
    }

    /// Entries admitted here and kept: not yet charged to the store, or charged and
    /// settling.
    pub fn held(&self) -> usize {
        self.state.lock().journal.len()
    }

    /// Entries admitted here and not yet charged to the store.
    pub fn uncharged(&self) -> usize {
        self.state.lock().journal.uncharged()
    }

    /// The journal was charged to the store: settle from now (unless already settling).
    fn charged(&self) {
        let until = chrono::Utc::now().timestamp_millis() + SETTLE_MS;
        let _ = self
            .settle_until
            .compare_exchange(0, until, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether checks are still decided here after a replay. Once the time is up, the
    /// charged entries go (the usage seen already counts them, `replay::count_as_seen`).
    pub fn settling(&self) -> bool {
        let until = self.settle_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if chrono::Utc::now().timestamp_millis() < until {
            return true;
        }
        let mut state = self.state.lock();
        state.journal.drop_charged();
        metrics::gauge!(m::LOCAL_JOURNAL_ENTRIES).set(state.journal.len() as f64);
        self.settle_until.store(0, Ordering::Relaxed);
        drop(state);
        self.changed.notify_one();
        false
    }

    /// These configs were just checked through the store: keep their usage fresh.
    pub fn touch(&self, configs: &[Arc<CompiledConfig>]) {
        self.recent.touch(configs);
    }

    /// Decides a check of `amounts` on `configs` here, and journals it if admitted (and
    /// not a dry run). All or nothing: every limit of every enforcing config must have
    /// room in this replica's share; shadow configs never refuse, but are charged.
    pub fn decide(
        &self,
        configs: &[Arc<CompiledConfig>],
        amounts: Amounts,
        dry_run: bool,
    ) -> Verdict {
        let verdict = self.decide_inner(configs, amounts, dry_run);
        if !dry_run {
            metrics::counter!(m::LOCAL_DECISIONS, "decision" => verdict.as_str()).increment(1);
        }
        verdict
    }

    fn decide_inner(
        &self,
        configs: &[Arc<CompiledConfig>],
        amounts: Amounts,
        dry_run: bool,
    ) -> Verdict {
        let n = self.replicas() as i64;
        if n == 0 {
            return Verdict::NoReplicaCount;
        }
        let mut state = self.state.lock();
        for c in configs.iter().filter(|c| !c.is_shadow()) {
            for (i, spec) in c.limits().iter().enumerate() {
                // A limit never seen counts as unused: the bound's weak spot, stated.
                let used = c.last_seen(i).map_or(0, |(used, _)| used);
                let share = (spec.max - used).max(0) / n;
                let taken = state.journal.taken(&c.config.id, spec.kind);
                if !admits(taken, share, amounts.for_kind(spec.kind)) {
                    return Verdict::Refused(spec.kind);
                }
            }
        }
        if dry_run {
            return Verdict::Admitted;
        }
        if state.journal.len() >= self.max_entries {
            return Verdict::JournalFull;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.journal.push(Entry {
            id: format!("local:{}:{seq}", self.replica_id),
            at_ms: chrono::Utc::now().timestamp_millis(),
            configs: configs.iter().map(|c| c.config.id.to_string()).collect(),
            amounts: [amounts.requests, amounts.tokens, amounts.cost_nanos],
            charged: false,
        });
        metrics::gauge!(m::LOCAL_JOURNAL_ENTRIES).set(state.journal.len() as f64);
        drop(state);
        self.changed.notify_one();
        Verdict::Admitted
    }
}

#[cfg(test)]
pub(crate) mod tests;
