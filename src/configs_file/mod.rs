//! Configs as code: a file (YAML or JSON) listing model configs as the management API's
//! create bodies. `tollgate configs validate|export|apply` read and write such files
//! (`crate::cli`); `--configs-file` makes one the source of truth of a running fleet:
//! each replica watches it and reconciles the store to it.
//!
//! `format` reads and validates a file, `render` writes one, `spec` compares a file's
//! config with a stored one, `plan` diffs them (pure), `reconcile` and `watch` apply a
//! watched file through the app layer, `managed` refuses API writes the file owns.

pub mod format;
pub mod managed;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod settings;
pub mod spec;
mod strict;
pub mod watch;

pub use format::{Desired, FileError, Format};
pub use settings::ConfigsFileSettings;
