//! The Bifrost-compatible model-config API under /api/governance/model-configs.

use super::error::ApiError;
use super::extract::{AnyJsonBody, ConfigId};
use super::list_query::ListQuery;
use super::views::{ModelConfigView, view};
use crate::app::{App, LocalChange, timed, timed_write};
use crate::limits::CompiledConfig;
use crate::model::ModelConfig;
use crate::model::config::{CreateModelConfig, UpdateModelConfig};
use crate::model::validate::{create_config, update_config};
use crate::store::{LimitUsage, Store, StoreError, WriteError};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// A write retries this often when the config keeps changing under it.
const WRITE_ATTEMPTS: usize = 5;

fn compile(config: ModelConfig) -> Result<CompiledConfig, ApiError> {
    CompiledConfig::compile(config).map_err(|e| ApiError::from(StoreError::Corrupt(e)))
}

/// Configs with their live usage read in one store call.
async fn with_usage<S: Store>(
    app: &App<S>,
    configs: Vec<Arc<CompiledConfig>>,
) -> Result<Vec<ModelConfigView>, ApiError> {
    let refs: Vec<&CompiledConfig> = configs.iter().map(|c| c.as_ref()).collect();
    let (now, usage) = timed("read_usage", app.store.read_usage(&refs)).await?;
    Ok(configs
        .iter()
        .zip(&usage)
        .map(|(c, u)| {
            for (i, limit) in u.iter().enumerate() {
                c.seen.record(i, limit.used, now);
            }
            view(c, Some(u))
        })
        .collect())
}

/// A config with its usage as this replica last saw it: no store call.
fn with_seen_usage(c: &CompiledConfig) -> ModelConfigView {
    let now = chrono::Utc::now().timestamp_millis();
    let usage: Vec<LimitUsage> = c
        .seen
        .usage(&c.limits, now)
        .into_iter()
        .map(|(used, start_ms)| LimitUsage { used, start_ms })
        .collect();
    view(c, Some(&usage))
}

async fn one_with_usage<S: Store>(
    app: &App<S>,
    config: ModelConfig,
) -> Result<ModelConfigView, ApiError> {
    let mut views = with_usage(app, vec![Arc::new(compile(config)?)]).await?;
    Ok(views.remove(0))
}

/// The usage read after a successful write must not turn it into an error: the write
/// happened. Fall back to the config without usage.
async fn after_write<S: Store>(
    app: &App<S>,
    config: ModelConfig,
) -> Result<ModelConfigView, ApiError> {
    let compiled = compile(config)?;
    Ok(
        match timed("read_usage", app.store.read_usage(&[&compiled])).await {
            Ok((_, usage)) => view(&compiled, Some(&usage[0])),
            Err(e) => {
                tracing::warn!(error = %e, "config written; live usage unavailable");
                view(&compiled, None)
            }
        },
    )
}

pub async fn create<S: Store>(
    State(app): State<Arc<App<S>>>,
    AnyJsonBody(req): AnyJsonBody<CreateModelConfig>,
) -> Result<Json<Value>, ApiError> {
    let now = timed("clock", app.store.clock()).await?;
    let config = create_config(req, now)?;
    let write = |epoch: Option<String>| {
        let (config, app) = (&config, &app);
        async move {
            timed_write(
                "create_config",
                app.store.create_config(config, epoch.as_deref()),
            )
            .await
        }
    };
    let written = app.fenced_write(write).await?;
    app.apply_local(&written, LocalChange::Upsert(&config))
        .await;
    let shown = after_write(&app, config).await?;
    Ok(Json(
        json!({"message": "Model config created successfully", "model_config": shown}),
    ))
}

pub async fn get<S: Store>(
    State(app): State<Arc<App<S>>>,
    ConfigId(id): ConfigId,
) -> Result<Json<Value>, ApiError> {
    let config = timed("get_config", app.store.get_config(&id))
        .await?
        .ok_or_else(|| ApiError::config_not_found(&id))?;
    Ok(Json(
        json!({"model_config": one_with_usage(&app, config).await?}),
    ))
}

pub async fn update<S: Store>(
    State(app): State<Arc<App<S>>>,
    ConfigId(id): ConfigId,
    AnyJsonBody(req): AnyJsonBody<UpdateModelConfig>,
) -> Result<Json<Value>, ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let current = timed("get_config", app.store.get_config(&id))
            .await?
            .ok_or_else(|| ApiError::config_not_found(&id))?;
        let now = timed("clock", app.store.clock()).await?;
        let next = update_config(&current, req.clone(), now)?;
        let write = |epoch: Option<String>| {
            let (current, next) = (&current, &next);
            let app = &app;
            async move {
                timed_write(
                    "replace_config",
                    app.store.replace_config(current, next, epoch.as_deref()),
                )
                .await
            }
        };
        match app.fenced_write(write).await {
            Ok(written) => {
                app.apply_local(&written, LocalChange::Upsert(&next)).await;
                let shown = after_write(&app, next).await?;
                return Ok(Json(
                    json!({"message": "Model config updated successfully", "model_config": shown}),
                ));
            }
            Err(WriteError::Stale) => continue,
            Err(WriteError::NotFound) => return Err(ApiError::config_not_found(&id)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(WriteError::Stale.into())
}

pub async fn delete<S: Store>(
    State(app): State<Arc<App<S>>>,
    ConfigId(id): ConfigId,
) -> Result<Json<Value>, ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let current = timed("get_config", app.store.get_config(&id))
            .await?
            .ok_or_else(|| ApiError::config_not_found(&id))?;
        let write = |epoch: Option<String>| {
            let (current, app) = (&current, &app);
            async move {
                timed_write(
                    "delete_config",
                    app.store.delete_config(current, epoch.as_deref()),
                )
                .await
            }
        };
        match app.fenced_write(write).await {
            Ok(written) => {
                app.apply_local(&written, LocalChange::Delete(&id)).await;
                return Ok(Json(
                    json!({"message": "Model config deleted successfully"}),
                ));
            }
            Err(WriteError::Stale) => continue,
            Err(WriteError::NotFound) => return Err(ApiError::config_not_found(&id)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(WriteError::Stale.into())
}

pub async fn list<S: Store>(
    State(app): State<Arc<App<S>>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(raw) =
        query.map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let q = ListQuery::parse(&raw)?;
    if !q.from_memory {
        // One store call when nothing changed, O(changed) otherwise: the page below then
        // comes from a snapshot as current as the store itself.
        app.refresh().await?;
    }
    let snapshot = app.snapshot();
    let (total_count, page) = q.page(snapshot.newest_first(), snapshot.len());
    let views = if q.from_memory {
        page.iter().map(|c| with_seen_usage(c)).collect()
    } else {
        with_usage(&app, page).await?
    };
    Ok(Json(json!({
        "model_configs": views,
        "count": views.len(),
        "total_count": total_count,
        "limit": q.limit,
        "offset": q.offset,
    })))
}
