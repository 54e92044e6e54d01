//! Config writes as every writer makes them (the management API and the configs-file
//! reconciler): fenced by this replica's epoch, timed, and applied to its own snapshot
//! at once, so its next check sees them.

use super::{App, LocalChange, timed_write};
use crate::configs_file::managed::{ManagedFile, refusal};
use crate::model::ModelConfig;
use crate::store::{Store, WriteError, Written};
use std::sync::Arc;

impl<S: Store> App<S> {
    /// Records this replica's configs file (read valid, or at start) for `write_refusal`.
    pub fn set_configs_file(&self, file: ManagedFile) {
        self.configs_file.store(Some(Arc::new(file)));
    }

    /// Why a management-API write must be refused because a configs file owns the
    /// config (the 409's message), if it must. `current`: as stored; `next`: as it would
    /// be written.
    pub fn write_refusal(
        &self,
        current: Option<&ModelConfig>,
        next: Option<&ModelConfig>,
    ) -> Option<String> {
        refusal(self.configs_file.load().as_deref(), current, next)
    }

    /// Creates `config` (atomic with the uniqueness rule: a `Conflict` names the config
    /// that already has its identity).
    pub async fn write_create(&self, config: &ModelConfig) -> Result<Written, WriteError> {
        let written = self
            .fenced_write(|epoch: Option<String>| async move {
                timed_write(
                    "create_config",
                    self.store.create_config(config, epoch.as_deref()),
                )
                .await
            })
            .await?;
        self.apply_local(&written, LocalChange::Upsert(config))
            .await;
        Ok(written)
    }

    /// Replaces `old` (as read: `Stale` if its revision moved) with `new`.
    pub async fn write_replace(
        &self,
        old: &ModelConfig,
        new: &ModelConfig,
    ) -> Result<Written, WriteError> {
        let written = self
            .fenced_write(|epoch: Option<String>| async move {
                timed_write(
                    "replace_config",
                    self.store.replace_config(old, new, epoch.as_deref()),
                )
                .await
            })
            .await?;
        self.apply_local(&written, LocalChange::Upsert(new)).await;
        Ok(written)
    }

    /// Deletes `old` (as read: `Stale` if its revision moved) and its counters.
    pub async fn write_delete(&self, old: &ModelConfig) -> Result<Written, WriteError> {
        let written = self
            .fenced_write(|epoch: Option<String>| async move {
                timed_write(
                    "delete_config",
                    self.store.delete_config(old, epoch.as_deref()),
                )
                .await
            })
            .await?;
        self.apply_local(&written, LocalChange::Delete(&old.id))
            .await;
        Ok(written)
    }
}
