//! Start-up and shutdown: pick the store, load configs, serve until told to stop.

use crate::alerts::AlertSink;
use crate::api::rls::{Rls, RlsOptions};
use crate::app::App;
use crate::settings::{RedisMode, Settings};
use crate::store::redis::{RedisOptions, Topology};
use crate::store::{MemoryStore, RedisStore, Store, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use unix::UnixServer;

mod unix;

/// Waits up to `grace` for an HTTP server told to stop; aborts it after that.
/// `on`: where it served, for the messages (`""` for `--listen`).
async fn served_within(
    server: &mut JoinHandle<std::io::Result<()>>,
    grace: Duration,
    on: &str,
) -> Result<(), String> {
    let on = if on.is_empty() {
        String::new()
    } else {
        format!(" {on}")
    };
    match tokio::time::timeout(grace, &mut *server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("server error{on}: {e}")),
        Ok(Err(e)) => Err(format!("server task{on} failed: {e}")),
        Err(_) => {
            server.abort();
            Err(format!(
                "in-flight requests{on} still running after {grace:?}; stopped anyway"
            ))
        }
    }
}

/// A tollgate serving in the background.
pub struct Running {
    pub addr: SocketAddr,
    /// Envoy's rate limit service, when `--grpc-listen` is given.
    pub grpc_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    grpc: Option<Grpc>,
    /// The same API on `--listen-unix`'s socket.
    unix: Option<UnixServer>,
    sync: JoinHandle<()>,
    persist: JoinHandle<()>,
    alerts: Arc<AlertSink>,
    /// `--configs-file`'s watcher.
    configs_file: Option<JoinHandle<()>>,
    /// `--on-store-error local`: the registry, replay and refresh loop, and the journal
    /// file's writer.
    local: Vec<JoinHandle<()>>,
    /// Writes the journal of local admissions one last time (a file only with
    /// `--state-file`).
    flush_local: Box<dyn Fn() + Send + Sync>,
    /// Gives back every lease this replica holds (`--lease-ms`).
    return_leases: Box<dyn Fn() -> LeaseReturn + Send + Sync>,
}

type LeaseReturn = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The gRPC server beside the HTTP one, stopped with it.
struct Grpc {
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to `grace`), then returns.
    pub async fn stop(mut self, grace: Duration) -> Result<(), String> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(tx) = self.grpc.as_mut().and_then(|g| g.shutdown.take()) {
            let _ = tx.send(());
        }
        if let Some(unix) = self.unix.as_mut() {
            unix.signal();
        }
        let started = tokio::time::Instant::now();
        let mut result = served_within(&mut self.server, grace, "").await;
        if let Some(grpc) = self.grpc.as_mut() {
            let left = grace.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, &mut grpc.server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => result = result.and(Err(format!("gRPC server error: {e}"))),
                Ok(Err(e)) => result = result.and(Err(format!("gRPC server task failed: {e}"))),
                Err(_) => {
                    grpc.server.abort();
                    result = result.and(Err(format!(
                        "gRPC calls still running after {grace:?}; stopped anyway"
                    )));
                }
            }
        }
        if let Some(unix) = self.unix.take() {
            let left = grace.saturating_sub(started.elapsed());
            result = result.and(unix.stop(left).await);
        }
        self.abort_tasks();
        // No check takes from a lease any more: what is unspent goes back.
        let left = grace
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        if tokio::time::timeout(left, (self.return_leases)())
            .await
            .is_err()
        {
            tracing::warn!(
                "giving back leases took too long; what is left stays counted until its window or period lets it go"
            );
        }
        (self.flush_local)();
        // No check can emit any more: what the webhook has not taken is logged.
        self.alerts
            .shutdown(grace.saturating_sub(started.elapsed()))
            .await;
        result
    }
}

impl Running {
    fn abort_tasks(&self) {
        self.sync.abort();
        self.persist.abort();
        if let Some(watch) = &self.configs_file {
            watch.abort();
        }
        for task in &self.local {
            task.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.abort_tasks();
        self.server.abort();
        if let Some(grpc) = &self.grpc {
            grpc.server.abort();
        }
    }
}

pub async fn start(settings: Settings) -> Result<Running, String> {
    settings.validate()?;
    match &settings.redis_url {
        Some(url) => {
            let timeout = Duration::from_millis(settings.store_timeout_ms);
            let topology = match settings.redis_mode {
                RedisMode::Sentinel => Topology::Sentinel {
                    master: settings.sentinel_master.clone().unwrap_or_default(),
                    master_username: settings.redis_master_username.clone(),
                    master_password: settings.redis_master_password.clone(),
                },
                RedisMode::Cluster => Topology::Cluster {
                    counter_slots: settings.cluster_counter_slots,
                },
                RedisMode::Standalone => Topology::Standalone,
            };
            let store = RedisStore::connect(RedisOptions {
                url: url.clone(),
                topology,
                key_prefix: settings.key_prefix.clone(),
                timeout,
                bulk_timeout: (timeout * 20).max(Duration::from_secs(5)),
                allow_evicting: settings.allow_evicting_redis,
                wait_replicas: settings.redis_wait_replicas,
            })?;
            // Sentinel mode: give the first discovery a moment, so that the first config
            // load goes to the master; if the sentinels are down, start not ready anyway.
            if settings.redis_mode == RedisMode::Sentinel
                && !store.wait_for_master(Duration::from_secs(5)).await
            {
                tracing::warn!(
                    "no master found through the sentinels yet; starting not ready, still asking"
                );
            }
            // Refuse now what would silently lose configs; a Redis that is down is checked
            // by /ready once it is up.
            match store.check_eviction_policy().await {
                Err(StoreError::Unavailable(e)) if e.contains("maxmemory-policy") => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check Redis's settings yet; /ready will")
                }
                Ok(()) => {}
            }
            if let Err(e) = store.check_replica_count().await {
                tracing::debug!(error = %e, "cannot count Redis's replicas yet; /ready will");
            }
            start_with(store, &settings, settings.state_file.clone()).await
        }
        None => {
            let store = match &settings.state_file {
                Some(path) => MemoryStore::with_state_file(path)?,
                None => MemoryStore::new(),
            };
            start_with(store, &settings, None).await
        }
    }
}

/// `snapshot_file`: with Redis, this replica's copy of its snapshot (`--state-file`).
async fn start_with<S: Store>(
    store: S,
    settings: &Settings,
    snapshot_file: Option<std::path::PathBuf>,
) -> Result<Running, String> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let unix_listener = match &settings.listen_unix {
        Some(path) => Some((unix::bind(path)?, path.clone())),
        None => None,
    };
    let grpc_listener = match settings.grpc_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| format!("cannot listen (gRPC) on {at}: {e}"))?,
        ),
        None => None,
    };
    let alerts = Arc::new(AlertSink::from_settings(settings)?);
    let mut app = App::new(store, settings.api_keys(), settings.on_store_error)
        .with_policy(settings.policy.policy());
    app.alerts = alerts.clone();
    app.usage_metrics = settings.usage_metrics;
    app.refusals = crate::app::refusals::Refusals::new(settings.policy.remember_refusals_ms);
    app.local = crate::app::local_share::LocalShare::new(
        settings.local.local_journal_max as usize,
        settings.local.local_refresh_ms,
    );
    if let Some(path) = snapshot_file {
        let journal = crate::app::local_share::journal_beside(&path);
        app.keep_snapshot_in(path)?;
        if settings.on_store_error == crate::settings::StoreErrorPolicy::Local {
            let snapshot = app.snapshot().clone();
            app.local.keep_in(journal, &snapshot)?;
        }
    }
    if settings.leases.lease_ms > 0 {
        if settings.redis_url.is_some() {
            app.leases = crate::app::leases::Leases::new(
                settings.leases.lease_ms,
                settings.leases.lease_min_rate,
            );
        } else {
            tracing::info!(
                "--lease-ms: the embedded store answers every check in process; no leases"
            );
        }
    }
    let app = Arc::new(app);
    let mut local = Vec::new();
    if app.leases.on() {
        let announce = settings.on_store_error != crate::settings::StoreErrorPolicy::Local;
        local.push(tokio::spawn(crate::app::leases::returns::run_forever(
            app.clone(),
            announce,
        )));
    }
    let returning = app.clone();
    let return_leases: Box<dyn Fn() -> LeaseReturn + Send + Sync> = Box::new(move || {
        let app = returning.clone();
        Box::pin(async move { crate::app::leases::returns::return_all(&app).await })
    });
    if settings.on_store_error == crate::settings::StoreErrorPolicy::Local {
        local.push(tokio::spawn(crate::app::local_share::replay::run_forever(
            app.clone(),
        )));
        let writer = app.clone();
        local.push(tokio::spawn(async move {
            writer
                .local
                .persist_forever(|| writer.snapshot().clone())
                .await
        }));
    }
    let flushed = app.clone();
    let flush_local: Box<dyn Fn() + Send + Sync> =
        Box::new(move || flushed.local.write(&flushed.snapshot()));
    // Not fatal: with Redis down, tollgate starts not ready and the sync loop retries.
    if let Err(e) = app.refresh().await {
        tracing::warn!(error = %e, "initial config load failed; will retry");
    }
    let sync = tokio::spawn(
        app.clone()
            .sync_forever(Duration::from_millis(settings.config_poll_ms)),
    );
    let persist = tokio::spawn(app.clone().persist_forever());
    // The file is reconciled through this replica's app layer, at start and on every
    // change; with the store down it retries, and /ready says what it always says.
    let configs_file = settings.configs_file.path.clone().map(|path| {
        // Before serving: with prune, no API write gets in before the file is read.
        // The marker: the path as given, made absolute (not resolved: a ConfigMap's
        // symlinks change on every update).
        let path = std::path::absolute(&path).unwrap_or(path);
        app.set_configs_file(crate::configs_file::managed::ManagedFile::new(
            path.display().to_string(),
            settings.configs_file.prune,
            [],
        ));
        tokio::spawn(crate::configs_file::watch::watch_forever(
            app.clone(),
            path,
            settings.configs_file.prune,
        ))
    });
    let (grpc, grpc_addr) = match grpc_listener {
        Some(listener) => {
            let at = listener.local_addr().map_err(|e| e.to_string())?;
            let rls = Rls::new(app.clone(), RlsOptions::from_settings(settings));
            let (tx, rx) = oneshot::channel::<()>();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(rls.into_service())
                    .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                        let _ = rx.await;
                    }),
            );
            tracing::info!(addr = %at, "Envoy rate limit service (gRPC) listening");
            let grpc = Grpc {
                shutdown: Some(tx),
                server,
            };
            (Some(grpc), Some(at))
        }
        None => (None, None),
    };
    let router = crate::api::service(app, settings.max_body_bytes as usize);
    let unix = unix_listener.map(|(listener, path)| {
        tracing::info!(path = %unix::shown(&listener), "tollgate listening on a Unix socket");
        UnixServer::serve(listener, path, router.clone())
    });
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, axum::ServiceExt::into_make_service(router))
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, store = if settings.redis_url.is_some() { "redis" } else { "memory" }, "tollgate listening");
    Ok(Running {
        addr,
        grpc_addr,
        shutdown: Some(tx),
        server,
        grpc,
        unix,
        sync,
        persist,
        alerts,
        configs_file,
        local,
        flush_local,
        return_leases,
    })
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn run(settings: Settings) -> Result<(), String> {
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let running = start(settings).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    running.stop(grace).await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
