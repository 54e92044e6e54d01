//! The Bifrost-compatible model-config API under /api/governance/model-configs.

use super::error::{ApiError, ErrorBody};
use super::extract::{AnyJsonBody, ConfigId};
use super::views::{ConfigFound, ConfigWritten, Deleted, ModelConfigView, view};
use crate::app::{App, timed};
use crate::limits::CompiledConfig;
use crate::model::ModelConfig;
use crate::model::config::{CreateModelConfig, UpdateModelConfig};
use crate::model::validate::{create_config, update_config};
use crate::store::{LimitUsage, Store, StoreError, WriteError};
use axum::Json;
use axum::extract::State;
use std::sync::Arc;

/// The request body of the writes: JSON, whatever the `Content-Type` header says (as
/// Bifrost), so `curl -d '{…}'` without `-H` works.
const ANY_CONTENT_TYPE: &str = "A JSON object. The management API parses the body as JSON \
whatever the `Content-Type` header says (as Bifrost does). Unknown fields are ignored; a field \
that is absent or null is unset (create) or unchanged (update).";

/// A write retries this often when the config keeps changing under it.
const WRITE_ATTEMPTS: usize = 5;

fn compile(config: ModelConfig) -> Result<CompiledConfig, ApiError> {
    CompiledConfig::compile(config).map_err(|e| ApiError::from(StoreError::Corrupt(e)))
}

/// Configs with their live usage read in one store call.
pub(super) async fn with_usage<S: Store>(
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
                c.seen().record(i, limit.used, now);
            }
            view(c, Some(u))
        })
        .collect())
}

/// A config with its usage as this replica last saw it: no store call.
pub fn with_seen_usage(c: &CompiledConfig) -> ModelConfigView {
    let now = chrono::Utc::now().timestamp_millis();
    let usage: Vec<LimitUsage> = c
        .seen()
        .usage(c.limits(), now)
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

#[utoipa::path(
    post,
    path = "/api/governance/model-configs",
    tag = "management",
    request_body(content = CreateModelConfig, description = ANY_CONTENT_TYPE),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Created", body = ConfigWritten),
        (status = 400, description = "Invalid config (the message names the field) or body not a JSON object", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 409, description = "A config with this scope, scope_id, model_name and provider exists, or a configs file (--configs-file) manages this config (the message names the file)", body = ErrorBody),
        (status = 413, description = "Body larger than --max-body-bytes", body = ErrorBody),
        (status = 503, description = "The store is unreachable; nothing was changed", body = ErrorBody),
    )
)]
pub async fn create<S: Store>(
    State(app): State<Arc<App<S>>>,
    AnyJsonBody(req): AnyJsonBody<CreateModelConfig>,
) -> Result<Json<ConfigWritten>, ApiError> {
    let now = timed("clock", app.store.clock()).await?;
    let config = create_config(req, now)?;
    if let Some(refused) = app.write_refusal(None, Some(&config)) {
        return Err(ApiError::conflict(refused));
    }
    match app.write_create(&config).await {
        Ok(_) => {}
        // The config that has this identity may be a configs file's: say so.
        Err(WriteError::Conflict(id)) => {
            let existing = app.snapshot().get(&id).map(|c| c.config.clone());
            return Err(
                match existing.and_then(|c| app.write_refusal(Some(&c), None)) {
                    Some(refused) => ApiError::conflict(refused),
                    None => WriteError::Conflict(id).into(),
                },
            );
        }
        Err(e) => return Err(e.into()),
    }
    let shown = after_write(&app, config).await?;
    Ok(Json(ConfigWritten {
        message: "Model config created successfully".into(),
        model_config: shown,
    }))
}

#[utoipa::path(
    get,
    path = "/api/governance/model-configs/{mc_id}",
    tag = "management",
    params(("mc_id" = String, Path, description = "The config's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The config with its live usage", body = ConfigFound),
        (status = 400, description = "Malformed id in the path", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such config", body = ErrorBody),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    )
)]
pub async fn get<S: Store>(
    State(app): State<Arc<App<S>>>,
    ConfigId(id): ConfigId,
) -> Result<Json<ConfigFound>, ApiError> {
    let config = timed("get_config", app.store.get_config(&id))
        .await?
        .ok_or_else(|| ApiError::config_not_found(&id))?;
    Ok(Json(ConfigFound {
        model_config: one_with_usage(&app, config).await?,
    }))
}

#[utoipa::path(
    put,
    path = "/api/governance/model-configs/{mc_id}",
    tag = "management",
    params(("mc_id" = String, Path, description = "The config's id")),
    request_body(content = UpdateModelConfig, description = ANY_CONTENT_TYPE),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = ConfigWritten),
        (status = 400, description = "Invalid change (the message names the field), an identity change, or body not a JSON object", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such config", body = ErrorBody),
        (status = 409, description = "The change collides with another config, a configs file (--configs-file) manages this config (the message names the file), or the config kept changing concurrently", body = ErrorBody),
        (status = 413, description = "Body larger than --max-body-bytes", body = ErrorBody),
        (status = 503, description = "The store is unreachable; nothing was changed", body = ErrorBody),
    )
)]
pub async fn update<S: Store>(
    State(app): State<Arc<App<S>>>,
    ConfigId(id): ConfigId,
    AnyJsonBody(req): AnyJsonBody<UpdateModelConfig>,
) -> Result<Json<ConfigWritten>, ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let current = timed("get_config", app.store.get_config(&id))
            .await?
            .ok_or_else(|| ApiError::config_not_found(&id))?;
        let now = timed("clock", app.store.clock()).await?;
        let next = update_config(&current, req.clone(), now)?;
        if let Some(refused) = app.write_refusal(Some(&current), Some(&next)) {
            return Err(ApiError::conflict(refused));
        }
        match app.write_replace(&current, &next).await {
            Ok(_) => {
                let shown = after_write(&app, next).await?;
                return Ok(Json(ConfigWritten {
                    message: "Model config updated successfully".into(),
                    model_config: shown,
                }));
            }
            Err(WriteError::Stale) => continue,
            Err(WriteError::NotFound) => return Err(ApiError::config_not_found(&id)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(WriteError::Stale.into())
}

#[utoipa::path(
    delete,
    path = "/api/governance/model-configs/{mc_id}",
    tag = "management",
    params(("mc_id" = String, Path, description = "The config's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted, with its counters", body = Deleted),
        (status = 400, description = "Malformed id in the path", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such config", body = ErrorBody),
        (status = 409, description = "A configs file (--configs-file) manages this config (the message names the file), or the config kept changing concurrently", body = ErrorBody),
        (status = 503, description = "The store is unreachable; nothing was changed", body = ErrorBody),
    )
)]
pub async fn delete<S: Store>(
    State(app): State<Arc<App<S>>>,
    ConfigId(id): ConfigId,
) -> Result<Json<Deleted>, ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let current = timed("get_config", app.store.get_config(&id))
            .await?
            .ok_or_else(|| ApiError::config_not_found(&id))?;
        if let Some(refused) = app.write_refusal(Some(&current), None) {
            return Err(ApiError::conflict(refused));
        }
        match app.write_delete(&current).await {
            Ok(_) => {
                return Ok(Json(Deleted {
                    message: "Model config deleted successfully".into(),
                }));
            }
            Err(WriteError::Stale) => continue,
            Err(WriteError::NotFound) => return Err(ApiError::config_not_found(&id)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(WriteError::Stale.into())
}
