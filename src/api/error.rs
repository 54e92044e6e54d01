//! Every error answer, in Bifrost's shape:
//! `{"is_bifrost_error": false, "status_code": N, "error": {"message": "…"}, "extra_fields": {}}`.
//! `extra_fields` is always present (and empty): Bifrost's own API contract tests expect
//! the key.

use crate::model::validate::ValidationError;
use crate::store::{StoreError, WriteError};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn config_not_found(id: &str) -> Self {
        ApiError::not_found(format!("model config {id:?} not found"))
    }
}

/// Every 4xx/5xx answer of the HTTP API (Bifrost's error envelope).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`: the error is tollgate's, not an upstream provider's.
    pub is_bifrost_error: bool,
    /// The HTTP status, repeated.
    pub status_code: u16,
    pub error: ErrorMessage,
    /// Always `{}`.
    pub extra_fields: ExtraFields,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorMessage {
    /// What is wrong, naming the field or parameter.
    pub message: String,
}

/// Always empty; present because Bifrost's clients expect the key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExtraFields {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            is_bifrost_error: false,
            status_code: self.status.as_u16(),
            error: ErrorMessage {
                message: self.message,
            },
            extra_fields: ExtraFields {},
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::bad_request(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Timeout(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry later"))
            }
            StoreError::Corrupt(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NotFound => ApiError::not_found("model config not found"),
            WriteError::Conflict(id) => ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "a model config with this scope, scope_id, model_name and provider already exists (id {id})"
                ),
            ),
            WriteError::Stale => ApiError::new(
                StatusCode::CONFLICT,
                "the model config kept changing concurrently; retry",
            ),
            WriteError::EpochChanged => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store's configs are being restored; nothing was changed, retry later",
            ),
            WriteError::Store(e @ (StoreError::Unavailable(_) | StoreError::Timeout(_))) => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{e}; nothing was changed, retry later"),
                )
            }
            WriteError::Store(e) => e.into(),
        }
    }
}
