//! Watching `--configs-file`: the file is read every `POLL` and its content hashed; a
//! new hash is parsed and, if valid, reconciled. Polling the path (not watching inodes)
//! sees every way a file changes: edits in place, atomic renames, and the Kubernetes
//! ConfigMap layout, where the file is a symlink through `..data`, itself a symlink
//! swapped atomically. A read costs a few microseconds per kilobyte.
//!
//! An invalid file changes nothing: the configs stay as they are, every error is logged
//! once with its place, and `tollgate_configs_file_ok` is 0 until a valid file arrives.
//! A valid file that cannot be reconciled (the store is down) is retried, with backoff.

use super::format::{Desired, FileError, Format, parse};
use super::managed::ManagedFile;
use super::reconcile::reconcile;
use crate::app::App;
use crate::metrics as m;
use crate::store::Store;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the file is read.
pub const POLL: Duration = Duration::from_millis(500);
/// Longest wait between two attempts to reconcile a file the store did not take.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Reads, validates and reconciles the file forever (until the task is dropped).
pub async fn watch_forever<S: Store>(app: Arc<App<S>>, path: PathBuf, prune: bool) {
    let marker = path.display().to_string();
    let format = match Format::of(&path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("{e}");
            return;
        }
    };
    metrics::gauge!(m::CONFIGS_FILE_OK).set(0.0);
    let mut seen: Option<[u8; 32]> = None;
    let mut pending: Option<Vec<Desired>> = None;
    let mut backoff = POLL;
    let mut retry_at = Instant::now();
    let throttle = crate::log_throttle::LogThrottle::new(30_000);
    loop {
        let (digest, content) = read(&path).await;
        if seen != Some(digest) {
            seen = Some(digest);
            let parsed = content.and_then(|bytes| parse(&bytes, format, chrono::Utc::now()));
            match parsed {
                Ok(desired) => {
                    tracing::info!(file = %marker, configs = desired.len(), "configs file read; reconciling");
                    metrics::gauge!(m::CONFIGS_FILE_OK).set(1.0);
                    let names = desired.iter().map(Desired::identity);
                    app.set_configs_file(ManagedFile::new(marker.clone(), prune, names));
                    pending = Some(desired);
                    (backoff, retry_at) = (POLL, Instant::now());
                }
                Err(errors) => {
                    metrics::gauge!(m::CONFIGS_FILE_OK).set(0.0);
                    metrics::counter!(m::CONFIGS_FILE_RECONCILES, "result" => "invalid")
                        .increment(1);
                    for e in &errors {
                        tracing::error!(file = %marker, "{e}");
                    }
                    tracing::error!(file = %marker, errors = errors.len(), "configs file invalid; nothing changed, current configs kept");
                }
            }
        }
        if let Some(desired) = &pending
            && Instant::now() >= retry_at
        {
            let started = Instant::now();
            match reconcile(&app, desired, prune, &marker).await {
                Ok(outcome) => {
                    metrics::counter!(m::CONFIGS_FILE_RECONCILES, "result" => "ok").increment(1);
                    tracing::info!(file = %marker, ms = started.elapsed().as_millis() as u64, "configs file reconciled: {outcome}");
                    pending = None;
                }
                Err(stopped) => {
                    metrics::counter!(m::CONFIGS_FILE_RECONCILES, "result" => "error").increment(1);
                    if let Some(more) = throttle.allow(chrono::Utc::now().timestamp_millis()) {
                        tracing::warn!(file = %marker, error = %stopped.error, also_since_last_line = more,
                            "configs file not reconciled yet (written so far: {}); retrying", stopped.so_far);
                    }
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The file's content hash (or the hash of the error reading it, so that one error is
/// logged once) and its content.
async fn read(path: &std::path::Path) -> ([u8; 32], Result<Vec<u8>, Vec<FileError>>) {
    match tokio::fs::read(path).await {
        Ok(bytes) => (Sha256::digest(&bytes).into(), Ok(bytes)),
        Err(e) => {
            let message = format!("cannot read {}: {e}", path.display());
            let digest = Sha256::digest(format!("error: {message}")).into();
            (digest, Err(vec![FileError::whole(message)]))
        }
    }
}
