//! HTTP handlers (management, check/usage, health, metrics) and Envoy's gRPC rate
//! limit service (`rls`).

pub mod check;
pub mod error;
pub mod extract;
pub mod health;
pub mod hot_routes;
pub mod list;
pub mod list_query;
pub mod management;
pub mod openapi;
pub mod rls;
pub mod views;

use crate::app::App;
use crate::store::Store;
use axum::Extension;
use axum::Router;
use axum::extract::{MatchedPath, OriginalUri, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What the HTTP server serves: the router, with `/v1/check` and `/v1/usage` answered
/// before it (`hot_routes`).
pub fn service<S: Store>(app: Arc<App<S>>, max_body_bytes: usize) -> hot_routes::HotRoutes<S> {
    let router = router(app.clone(), max_body_bytes);
    hot_routes::HotRoutes::new(app, router, max_body_bytes)
}

pub fn router<S: Store>(app: Arc<App<S>>, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route(
            "/governance/model-configs",
            get(list::list::<S>).post(management::create::<S>),
        )
        .route(
            "/governance/model-configs/{mc_id}",
            get(management::get::<S>)
                .put(management::update::<S>)
                .delete(management::delete::<S>),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/api", api)
        .route("/v1/check", post(check::check::<S>))
        .route("/v1/usage", post(check::usage::<S>))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready::<S>))
        .route("/metrics", get(health::metrics::<S>))
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            require_api_key::<S>,
        ))
        .layer(Extension(extract::BodyLimit(max_body_bytes)))
        .layer(middleware::from_fn(count_requests))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(app)
}

/// The path as the client sent it: inside the nested `/api` router `req.uri()` has lost
/// its prefix.
fn client_path(req: &Request) -> &str {
    req.extensions()
        .get::<OriginalUri>()
        .map_or(req.uri().path(), |uri| uri.path())
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        client_path(&req)
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            client_path(&req)
        ),
    )
}

/// A panic is a bug; still answer in the error shape instead of dropping the connection.
pub(crate) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

/// `/api` and everything under it needs `Authorization: Bearer <key>` when any key is
/// configured, unknown paths included (checked before routing, so a stranger learns
/// nothing from 404s). Keys are compared as SHA-256 digests in constant time, all of
/// them, so timing reveals neither a key nor its length.
async fn require_api_key<S: Store>(
    State(app): State<Arc<App<S>>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let management = path == "/api" || path.starts_with("/api/");
    if app.api_key_digests.is_empty() || !management {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(token) = presented else {
        return ApiError::unauthorized("missing API key: send Authorization: Bearer <key>")
            .into_response();
    };
    let presented = crate::app::key_digest(token.as_bytes());
    let mut ok = subtle::Choice::from(0u8);
    for key in &app.api_key_digests {
        ok |= key.ct_eq(&presented);
    }
    if bool::from(ok) {
        next.run(req).await
    } else {
        ApiError::unauthorized("invalid API key").into_response()
    }
}

/// Route templates, as label values (the raw path never is one). The OpenAPI document
/// lists exactly these (`openapi::tests`).
pub(crate) const ROUTES: &[&str] = &[
    "/v1/check",
    "/v1/usage",
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/api/governance/model-configs",
    "/api/governance/model-configs/{mc_id}",
];

/// Status codes tollgate answers with, as label values.
const STATUSES: &[(u16, &str)] = &[
    (200, "200"),
    (400, "400"),
    (401, "401"),
    (404, "404"),
    (405, "405"),
    (409, "409"),
    (413, "413"),
    (415, "415"),
    (429, "429"),
    (500, "500"),
    (503, "503"),
];

/// `tollgate_http_requests_total` by route template and status, with static label
/// values: nothing is allocated per request on the hot path.
/// Known (route, status) series are resolved once (`metrics_handles`).
async fn count_requests(req: Request, next: Next) -> Response {
    let (route_at, route) = match req.extensions().get::<MatchedPath>() {
        None => (ROUTES.len(), None),
        Some(p) => match ROUTES.iter().position(|r| *r == p.as_str()) {
            Some(i) => (i, None),
            None => (usize::MAX, Some(p.as_str().to_string())),
        },
    };
    let response = next.run(req).await;
    count_request(route_at, route, response.status());
    response
}

/// One request answered: `route_at` is its template's position in `ROUTES`
/// (`ROUTES.len()`: no route matched; `usize::MAX`: a template missing from `ROUTES`,
/// named by `route`).
pub(crate) fn count_request(route_at: usize, route: Option<String>, status: StatusCode) {
    let route_label = || match ROUTES.get(route_at) {
        Some(r) => metrics::SharedString::const_str(r),
        None if route_at == ROUTES.len() => metrics::SharedString::const_str("unmatched"),
        // A template missing from ROUTES: still bounded, just not free.
        None => metrics::SharedString::from_owned(route.clone().unwrap_or_default()),
    };
    let code = status.as_u16();
    let (status_at, status) = match STATUSES.iter().position(|(c, _)| *c == code) {
        Some(i) => (i, metrics::SharedString::const_str(STATUSES[i].1)),
        None => (
            usize::MAX,
            metrics::SharedString::from_owned(code.to_string()),
        ),
    };
    crate::metrics_handles::http_requests(route_at, status_at, || {
        metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route_label(), "status" => status)
    })
    .increment(1);
}
