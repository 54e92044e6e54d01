//! `--listen-unix`: the HTTP API on a Unix-domain socket beside the TCP one.
//!
//! A sidecar's client is on the same host. Over loopback TCP about half of what a check
//! costs tollgate is the kernel's (the sender runs the whole TCP stack of both ends); a
//! Unix socket skips that stack. The same service answers on both, so routes, API keys
//! and counters are one.

use crate::api::hot_routes::HotRoutes;
use crate::store::Store;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The socket's server, stopped with the TCP one; it removes its socket file when done.
pub struct UnixServer {
    path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<io::Result<()>>,
}

/// Binds `path`. A socket there that nobody answers on is what a tollgate killed
/// without its shutdown left: it is replaced. A socket something answers on, or any
/// other kind of file, is refused (it would be taken from whoever uses it).
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "cannot listen on {shown}: another process is serving on that socket"
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot replace the stale socket {shown}: {e}"))?;
        }
        Ok(_) => {
            return Err(format!(
                "cannot listen on {shown}: the path exists and is not a socket \
                 (--listen-unix replaces only a stale socket)"
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot listen on {shown}: {e}")),
    }
    UnixListener::bind(path).map_err(|e| format!("cannot listen on {shown}: {e}"))
}

impl UnixServer {
    /// Serves `service` on `listener` (bound at `path`) until `stop`.
    pub fn serve<S: Store>(listener: UnixListener, path: PathBuf, service: HotRoutes<S>) -> Self {
        let service = axum::ServiceExt::into_make_service(service);
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, service)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        UnixServer {
            path,
            shutdown: Some(tx),
            server,
        }
    }

    /// Stops accepting (with the TCP server: `Running::stop` signals both at once).
    pub fn signal(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits up to `grace` for in-flight requests, then removes the socket.
    pub async fn stop(mut self, grace: Duration) -> Result<(), String> {
        self.signal();
        let result = super::served_within(&mut self.server, grace, "on the Unix socket").await;
        self.remove();
        result
    }

    fn remove(&self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the Unix socket");
        }
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        if !self.server.is_finished() {
            self.server.abort();
            self.remove();
        }
    }
}

/// Where a listener says it is, for the start-up log line.
pub fn shown(listener: &UnixListener) -> String {
    listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replaces_a_stale_socket_and_refuses_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.sock");
        // A socket left behind: bound, then its listener gone without removing it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = bind(&path).expect("a stale socket is replaced");
        // Now something answers there: refused, and the socket left alone.
        let err = bind(&path).unwrap_err();
        assert!(err.contains("another process is serving"), "{err}");
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(live);
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "keep me").unwrap();
        let err = bind(&file).unwrap_err();
        assert!(err.contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        let err = bind(&dir.path().join("missing/dir/t.sock")).unwrap_err();
        assert!(err.starts_with("cannot listen on"), "{err}");
    }
}
