//! `/health` (the process is up), `/ready` (it can do its job), `/metrics`.

use crate::app::App;
use crate::store::Store;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use std::sync::Arc;

pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers (with every script loaded, for Redis) and the config
/// snapshot has been loaded at least once.
pub async fn ready<S: Store>(State(app): State<Arc<App<S>>>) -> impl IntoResponse {
    let store = crate::app::timed("ping", app.store.ping()).await;
    let snapshot_loaded = app.snapshot_loaded();
    let ready = store.is_ok() && snapshot_loaded;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": match &store { Ok(()) => "ok".to_string(), Err(e) => e.to_string() },
        "snapshot_loaded": snapshot_loaded,
        "configs": app.snapshot().len(),
        "snapshot_age_seconds": app.snapshot_age().as_secs_f64(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

pub async fn metrics<S: Store>(State(app): State<Arc<App<S>>>) -> impl IntoResponse {
    metrics::gauge!(crate::metrics::SNAPSHOT_AGE).set(app.snapshot_age().as_secs_f64());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
