//! `--state-file`: configs kept on local disk, replaced atomically (a temp file, fsync,
//! rename, directory fsync), so a crash never leaves a torn file.
//!
//! The embedded store keeps its configs there; with Redis, each replica keeps its last
//! snapshot there, so a fleet restarted onto an empty Redis restores its configs.

use crate::model::ModelConfig;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// On-disk format.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u64,
    /// The store epoch these configs belong to (absent in files of older releases).
    #[serde(default)]
    pub epoch: Option<String>,
    pub configs: Vec<ModelConfig>,
}

/// The file at `path`, None if it does not exist. A file that cannot be read or parsed
/// is an error: starting without it would silently drop every limit. Also fails when
/// the file could never be written (found now, not at the first write).
pub fn open(path: &Path) -> Result<Option<StateFile>, String> {
    let state = match std::fs::read(path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("state file {} is not valid: {e}", path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read state file {}: {e}", path.display())),
    };
    tempfile::NamedTempFile::new_in(dir_of(path)).map_err(|e| {
        format!(
            "cannot write state file {}: its directory {} is not writable: {e}",
            path.display(),
            dir_of(path).display()
        )
    })?;
    Ok(state)
}

/// Where the file's temporary sibling is written before the atomic rename.
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `state` (a `StateFile`, or another record kept beside it) as JSON, atomically.
pub fn write_atomically<T: Serialize>(path: &Path, state: &T) -> Result<(), String> {
    let dir = dir_of(path);
    let fail = |e: std::io::Error| format!("cannot write state file {}: {e}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    let mut out = std::io::BufWriter::new(&mut tmp);
    serde_json::to_writer(&mut out, state).map_err(|e| fail(e.into()))?;
    out.write_all(b"\n").map_err(fail)?;
    out.flush().map_err(fail)?;
    drop(out);
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
