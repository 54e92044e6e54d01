//! The Bifrost-compatible model-config API under /api/governance/model-configs.

use super::error::ApiError;
use super::extract::{AnyJsonBody, ConfigId};
use super::views::{ModelConfigView, view};
use crate::app::{App, LocalChange, timed, timed_write};
use crate::limits::CompiledConfig;
use crate::model::config::{CreateModelConfig, UpdateModelConfig};
use crate::model::validate::{create_config, update_config};
use crate::model::{ModelConfig, Scope};
use crate::store::{Store, StoreError, WriteError};
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
    configs: Vec<CompiledConfig>,
) -> Result<Vec<ModelConfigView>, ApiError> {
    let refs: Vec<&CompiledConfig> = configs.iter().collect();
    let (_, usage) = timed("read_usage", app.store.read_usage(&refs)).await?;
    Ok(configs
        .iter()
        .zip(&usage)
        .map(|(c, u)| view(c, Some(u)))
        .collect())
}

async fn one_with_usage<S: Store>(
    app: &App<S>,
    config: ModelConfig,
) -> Result<ModelConfigView, ApiError> {
    let mut views = with_usage(app, vec![compile(config)?]).await?;
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
    let version = timed_write("create_config", app.store.create_config(&config)).await?;
    app.apply_local(version, LocalChange::Upsert(&config)).await;
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
        match timed_write("replace_config", app.store.replace_config(&current, &next)).await {
            Ok(version) => {
                app.apply_local(version, LocalChange::Upsert(&next)).await;
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
        match timed_write("delete_config", app.store.delete_config(&current)).await {
            Ok(version) => {
                app.apply_local(version, LocalChange::Delete(&id)).await;
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

/// Query of the list endpoint, validated.
#[derive(Debug)]
pub struct ListQuery {
    pub limit: usize,
    pub offset: usize,
    pub search: Option<String>,
    pub scope: Option<Scope>,
    pub scope_id: Option<String>,
    pub provider: Option<String>,
    pub from_memory: bool,
}

impl ListQuery {
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let limit = match q.get("limit") {
            None => 25,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "limit must be an integer from 1 to 100 (got {v:?})"
                    )));
                }
            },
        };
        let offset = match q.get("offset") {
            None => 0,
            Some(v) => v.trim().parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("offset must be an integer >= 0 (got {v:?})"))
            })?,
        };
        let scope = match q.get("scope").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(Scope::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "scope must be one of global, virtual_key, user (got {s:?})"
                ))
            })?),
        };
        let from_memory = match q.get("from_memory").map(|s| s.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) => match v.as_str() {
                "true" | "1" => true,
                "false" | "0" | "" => false,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "from_memory must be true or false (got {v:?})"
                    )));
                }
            },
        };
        let non_empty = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(ListQuery {
            limit,
            offset,
            search: non_empty("search").map(|s| s.to_lowercase()),
            scope,
            scope_id: non_empty("scope_id"),
            provider: non_empty("provider"),
            from_memory,
        })
    }

    pub fn matches(&self, c: &ModelConfig) -> bool {
        self.search
            .as_ref()
            .is_none_or(|s| c.model_name.to_lowercase().contains(s))
            && self.scope.is_none_or(|s| c.scope == s)
            && self
                .scope_id
                .as_ref()
                .is_none_or(|s| c.scope_id.as_ref() == Some(s))
            && self
                .provider
                .as_ref()
                .is_none_or(|p| c.provider.as_ref() == Some(p))
    }
}

pub async fn list<S: Store>(
    State(app): State<Arc<App<S>>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(raw) =
        query.map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let q = ListQuery::parse(&raw)?;
    let (total_count, views) = if q.from_memory {
        let snapshot = app.snapshot();
        let matching: Vec<_> = snapshot
            .configs
            .iter()
            .filter(|c| q.matches(&c.config))
            .collect();
        let page = matching
            .iter()
            .skip(q.offset)
            .take(q.limit)
            .map(|c| view(c, None))
            .collect::<Vec<_>>();
        (matching.len(), page)
    } else {
        let (_, mut configs) = timed("load_configs", app.store.load_configs()).await?;
        configs.retain(|c| q.matches(c));
        configs.sort_by(|a, b| a.list_order().cmp(&b.list_order()));
        let total = configs.len();
        let page = configs
            .into_iter()
            .skip(q.offset)
            .take(q.limit)
            .map(compile)
            .collect::<Result<Vec<_>, _>>()?;
        (total, with_usage(&app, page).await?)
    };
    Ok(Json(json!({
        "model_configs": views,
        "count": views.len(),
        "total_count": total_count,
        "limit": q.limit,
        "offset": q.offset,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<ListQuery, ApiError> {
        ListQuery::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn list_query_bounds() {
        let d = q(&[]).unwrap();
        assert_eq!((d.limit, d.offset, d.from_memory), (25, 0, false));
        assert!(q(&[("limit", "0")]).is_err());
        assert!(q(&[("limit", "101")]).is_err());
        assert!(q(&[("limit", "abc")]).is_err());
        assert!(q(&[("offset", "-1")]).is_err());
        assert!(q(&[("scope", "team")]).is_err());
        assert!(q(&[("from_memory", "yes")]).is_err());
        assert_eq!(
            q(&[("limit", "100"), ("offset", "7")]).map(|x| (x.limit, x.offset)),
            Ok((100, 7))
        );
    }
}
