//! `/health` (the process is up), `/ready` (it can do its job), `/metrics`.

use crate::app::App;
use crate::store::Store;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// `ok`, or what is wrong with the store.
    pub store: String,
    pub snapshot_loaded: bool,
    /// Configs in this replica's snapshot.
    pub configs: usize,
    pub snapshot_age_seconds: f64,
    /// `--redis-wait-replicas`: absent when writes are confirmed (or the option is off);
    /// else why they are not. Still ready: checks are answered and counted on the master,
    /// only a failover could lose them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<String>,
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Health))
)]
pub async fn health() -> impl IntoResponse {
    Json(Health { status: "ok" })
}

/// Ready when the store answers (with every script loaded, for Redis) and the config
/// snapshot has been loaded at least once.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the store is unreachable or rejects writes, or no snapshot yet", body = Readiness),
    )
)]
pub async fn ready<S: Store>(State(app): State<Arc<App<S>>>) -> impl IntoResponse {
    let store = crate::app::timed("ping", app.store.ping()).await;
    let snapshot_loaded = app.snapshot_loaded();
    let ready = store.is_ok() && snapshot_loaded;
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        store: match &store {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        },
        snapshot_loaded,
        configs: app.snapshot().len(),
        snapshot_age_seconds: app.snapshot_age().as_secs_f64(),
        replication: app.store.replication_shortfall(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format",
        content_type = "text/plain", body = String))
)]
pub async fn metrics<S: Store>(State(app): State<Arc<App<S>>>) -> impl IntoResponse {
    metrics::gauge!(crate::metrics::SNAPSHOT_AGE).set(app.snapshot_age().as_secs_f64());
    let snapshot = Arc::clone(&app.snapshot());
    let text = crate::observe::scrape(app.metrics.clone(), snapshot, app.usage_metrics).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
