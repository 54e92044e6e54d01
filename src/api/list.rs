//! `GET /api/governance/model-configs`: the list, its query and its paging.

use super::error::{ApiError, ErrorBody};
use super::list_query::ListQuery;
use super::management::{with_seen_usage, with_usage};
use super::views::ConfigList;
use crate::app::App;
use crate::store::Store;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::IntoParams;

/// Any integer >= 0, however large (past the end is an empty page; `limit` is clamped).
fn non_negative_param() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(0))
        .build()
}

/// The list's query as documented. The handler reads the raw pairs and parses them with
/// `ListQuery::parse`, so that a bad value gets a 400 naming it.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Page size: default 25; `0` is the default; above 100 is 100. Negative or not a
    /// number: 400.
    #[param(schema_with = non_negative_param)]
    limit: Option<u64>,
    /// Items to skip (default 0). Negative or not a number: 400.
    #[param(schema_with = non_negative_param)]
    offset: Option<u64>,
    /// Case-insensitive substring of `model_name`.
    search: Option<String>,
    /// `global`, `virtual_key` or `user`; any other value matches nothing (an empty page).
    scope: Option<String>,
    scope_id: Option<String>,
    provider: Option<String>,
    /// Only `true` (any letter case) answers from this replica's memory, with no store
    /// round trip; any other value reads the store.
    from_memory: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/governance/model-configs",
    tag = "management",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of configs, newest first", body = ConfigList),
        (status = 400, description = "Bad `limit`/`offset` or query string", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    )
)]
pub async fn list<S: Store>(
    State(app): State<Arc<App<S>>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<ConfigList>, ApiError> {
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
    Ok(Json(ConfigList {
        count: views.len(),
        model_configs: views,
        total_count,
        limit: q.limit,
        offset: q.offset,
    }))
}
