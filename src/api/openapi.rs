//! `GET /openapi.json`: the OpenAPI 3.1 document of every HTTP endpoint, generated from
//! the handlers' `#[utoipa::path]` annotations and the request/response types
//! (`ToSchema`), so it cannot be written out of step with the code by hand.

use super::check::{CheckAnswer, CheckRequest, UsageAnswer, UsageRequest};
use super::error::{ErrorBody, ErrorMessage, ExtraFields};
use super::health::{Health, Readiness};
use super::views::{
    BudgetView, ConfigFound, ConfigList, ConfigWritten, Deleted, ModelConfigView, RateLimitView,
};
use crate::model::config::{BudgetInput, CreateModelConfig, RateLimitInput, UpdateModelConfig};
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::LazyLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tollgate",
        description = "Distributed rate-limit and budget sidecar for LLM gateways. \
The management API (`/api/*`) is wire-compatible with Bifrost's governance model-configs \
API and needs `Authorization: Bearer <key>` when tollgate runs with `--api-key`; its bodies \
are JSON whatever the `Content-Type`. `/v1/*` bodies must be `application/json` (415 \
otherwise). Every 4xx/5xx answer is Bifrost's error envelope (`ErrorBody`)."
    ),
    paths(
        super::check::check,
        super::check::usage::usage,
        super::list::list,
        super::management::create,
        super::management::get,
        super::management::update,
        super::management::delete,
        super::health::health,
        super::health::ready,
        super::health::metrics,
        openapi_json,
    ),
    components(schemas(
        CheckRequest, CheckAnswer, UsageRequest, UsageAnswer, ErrorBody, ErrorMessage,
        ExtraFields, CreateModelConfig, UpdateModelConfig, BudgetInput, RateLimitInput,
        ModelConfigView, BudgetView, RateLimitView, ConfigWritten, ConfigFound, ConfigList,
        Deleted, Health, Readiness,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "hot path", description = "Check-and-consume before an upstream call, usage after it"),
        (name = "management", description = "Bifrost-compatible model configs"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The `bearer` scheme that the `/api/*` operations name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "One of the `--api-key` values; required only when any is configured",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, serialized once.
pub fn document() -> &'static str {
    static DOC: LazyLock<String> = LazyLock::new(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the document serializes")
    });
    &DOC
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This OpenAPI 3.1 document",
        content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut routes = super::super::ROUTES.to_vec();
        documented.sort_unstable();
        routes.sort_unstable();
        assert_eq!(documented, routes);
    }

    #[test]
    fn management_needs_the_bearer_key_and_errors_have_the_envelope() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let secured = op.get("security").is_some();
                assert_eq!(secured, path.starts_with("/api/"), "{method} {path}");
                let responses = op["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{method} {path}");
                for (status, r) in responses {
                    // A denied check (429) and an unready replica (503) answer in their
                    // own shapes; every other error is the envelope.
                    let own_shape = (path == "/v1/check" && status == "429")
                        || (path == "/ready" && status == "503");
                    if (status.starts_with('4') || status.starts_with('5')) && !own_shape {
                        assert_eq!(
                            r["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }
}
