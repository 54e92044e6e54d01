//! Making the store match a watched configs file, through the app layer (this replica's
//! own writes, fenced and applied to its snapshot), race-safe across replicas that
//! watch the same file.
//!
//! Each round brings the snapshot up to the store, plans against it, and writes the
//! steps; every write compares (uniqueness on create, revision on update and delete).
//! A write another replica beat (`Conflict`: it created the config; `Stale`: it changed
//! it; `NotFound`: it deleted it) is not an error: the next round re-reads and compares,
//! and usually finds the config already as the file says. So replicas converge with no
//! duplicates and no retry storms: a few rounds at most, only when a write raced.

use super::format::Desired;
use super::plan::{Action, Options, Step, plan};
use super::spec::{carry_over, fresh};
use crate::app::{App, timed};
use crate::metrics as m;
use crate::model::ModelConfig;
use crate::store::{Store, StoreError, WriteError};
use std::fmt;

/// Rounds before a reconcile gives up (the watcher retries later).
const ROUNDS: usize = 5;

/// What one reconcile wrote (and found already right).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub released: usize,
    pub unchanged: usize,
}

impl Outcome {
    pub fn writes(&self) -> usize {
        self.created + self.updated + self.deleted + self.released
    }

    fn record(&mut self, action: Action) {
        match action {
            Action::Create => self.created += 1,
            Action::Update => self.updated += 1,
            Action::Delete => self.deleted += 1,
            Action::Release => self.released += 1,
            Action::Unchanged => self.unchanged += 1,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} created, {} updated, {} deleted, {} released, {} unchanged",
            self.created, self.updated, self.deleted, self.released, self.unchanged
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Write(WriteError),
    #[error("the configs kept changing under the reconcile ({ROUNDS} rounds); will retry")]
    Contended,
}

/// A reconcile that stopped, and what it had written by then.
#[derive(Debug)]
pub struct Stopped {
    pub error: ReconcileError,
    pub so_far: Outcome,
}

/// Makes the store hold what `desired` says. `marker`: the file's path, stored in the
/// configs it manages.
pub async fn reconcile<S: Store>(
    app: &App<S>,
    desired: &[Desired],
    prune: bool,
    marker: &str,
) -> Result<Outcome, Stopped> {
    let mut outcome = Outcome::default();
    rounds(app, desired, prune, marker, &mut outcome)
        .await
        .map(|()| outcome)
        .map_err(|error| Stopped {
            error,
            so_far: outcome,
        })
}

async fn rounds<S: Store>(
    app: &App<S>,
    desired: &[Desired],
    prune: bool,
    marker: &str,
    outcome: &mut Outcome,
) -> Result<(), ReconcileError> {
    for _ in 0..ROUNDS {
        app.refresh().await?;
        let snapshot = app.snapshot().clone();
        let current: Vec<&ModelConfig> = snapshot.configs().collect();
        let options = Options {
            prune,
            marker: Some(marker),
        };
        let steps = plan(desired, &current, options);
        let mut raced = false;
        outcome.unchanged = 0;
        for step in &steps {
            if step.action == Action::Unchanged {
                outcome.unchanged += 1;
                continue;
            }
            match write(app, step, marker).await {
                Ok(()) => {
                    outcome.record(step.action);
                    metrics::counter!(m::CONFIGS_FILE_WRITES, "op" => step.action.as_str())
                        .increment(1);
                    tracing::debug!(step = %step.line(), "configs file: written");
                }
                Err(WriteError::Conflict(_) | WriteError::Stale | WriteError::NotFound) => {
                    tracing::debug!(step = %step.line(), "configs file: another writer got there first; comparing again");
                    raced = true;
                }
                Err(WriteError::Store(e)) => return Err(e.into()),
                Err(e) => return Err(ReconcileError::Write(e)),
            }
        }
        if !raced {
            return Ok(());
        }
    }
    Err(ReconcileError::Contended)
}

async fn write<S: Store>(app: &App<S>, step: &Step<'_>, marker: &str) -> Result<(), WriteError> {
    let now = timed("clock", app.store.clock()).await?;
    let marker = Some(marker);
    match (step.action, step.desired, step.current) {
        (Action::Create, Some(d), _) => {
            app.write_create(&fresh(&d.config, now, marker)).await?;
        }
        (Action::Update, Some(d), Some(c)) => {
            app.write_replace(c, &carry_over(c, &d.config, now, marker))
                .await?;
        }
        (Action::Delete, _, Some(c)) => {
            app.write_delete(c).await?;
        }
        (Action::Release, _, Some(c)) => {
            let mut next = c.clone();
            next.managed_by = None;
            next.updated_at = now;
            next.revision = c.revision + 1;
            app.write_replace(c, &next).await?;
        }
        _ => {}
    }
    Ok(())
}
