//! `POST /v1/check` and `POST /v1/usage` answered before the router: every gateway call
//! passes here twice, and the router's per-request work (matching the path, cloning
//! each layer's service, boxing its future, the extensions it inserts) was a fifth of
//! the sidecar's CPU per check. The same handlers answer, with what the layers did for
//! them done here: the body limit, `tollgate_http_requests_total`, and a panic still
//! answered in the error shape. Everything else goes to the router as before.

use super::extract::{JsonBody, read_json};
use super::{ROUTES, check, count_request, panic_response};
use crate::app::App;
use crate::store::Store;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// The router, with the two hot routes taken off its path.
pub struct HotRoutes<S: Store> {
    app: Arc<App<S>>,
    router: Router,
    max_body_bytes: usize,
}

impl<S: Store> Clone for HotRoutes<S> {
    fn clone(&self) -> Self {
        HotRoutes {
            app: self.app.clone(),
            router: self.router.clone(),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

impl<S: Store> HotRoutes<S> {
    pub fn new(app: Arc<App<S>>, router: Router, max_body_bytes: usize) -> Self {
        HotRoutes {
            app,
            router,
            max_body_bytes,
        }
    }
}

#[derive(Clone, Copy)]
enum Hot {
    Check,
    Usage,
}

impl Hot {
    fn of(req: &Request) -> Option<Hot> {
        if req.method() != Method::POST {
            return None;
        }
        match req.uri().path() {
            "/v1/check" => Some(Hot::Check),
            "/v1/usage" => Some(Hot::Usage),
            _ => None,
        }
    }

    fn route(self) -> &'static str {
        match self {
            Hot::Check => "/v1/check",
            Hot::Usage => "/v1/usage",
        }
    }
}

impl<S: Store> Service<Request> for HotRoutes<S> {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Some(hot) = Hot::of(&req) else {
            return Box::pin(self.router.call(req));
        };
        let (app, limit) = (self.app.clone(), self.max_body_bytes);
        Box::pin(async move {
            let answer = AssertUnwindSafe(answer(hot, app, req, limit))
                .catch_unwind()
                .await;
            let response = answer.unwrap_or_else(panic_response);
            let route_at = ROUTES.iter().position(|r| *r == hot.route());
            count_request(route_at.unwrap_or(usize::MAX), None, response.status());
            Ok(response)
        })
    }
}

async fn answer<S: Store>(hot: Hot, app: Arc<App<S>>, req: Request, limit: usize) -> Response {
    match hot {
        Hot::Check => match read_json(req, limit).await {
            Ok(body) => check::check(State(app), JsonBody(body)).await,
            Err(e) => Err(e),
        },
        Hot::Usage => match read_json(req, limit).await {
            Ok(body) => check::usage(State(app), JsonBody(body)).await,
            Err(e) => Err(e),
        },
    }
    .into_response()
}
