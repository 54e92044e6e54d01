//! JSON body extractors whose every rejection is a clear 4xx in the error shape:
//! 413 for a body over the limit, 400 naming the field for malformed JSON or wrong types,
//! and (for `/v1/*` only) 415 for a wrong content type.
//!
//! `JsonBody` (the `/v1/*` hot path) requires `Content-Type: application/json`.
//! `AnyJsonBody` (the management API) parses the body as JSON whatever the header says,
//! as Bifrost does (it never looks at it), so `curl -d '{…}'` without `-H` works.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

/// A JSON body that must be sent as `application/json` (or `application/*+json`).
pub struct JsonBody<T>(pub T);

/// A JSON body, whatever its `Content-Type` (Bifrost-compatible management API).
pub struct AnyJsonBody<T>(pub T);

/// Largest accepted body (`--max-body-bytes`), set on the router as an extension.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A rejected body is still read (and thrown away) up to this much, so the client can
/// finish sending and then read the 4xx; answering early makes HTTP/1 clients see a
/// broken pipe or reset instead. Past it, the connection is simply closed.
const DRAIN_CAP: usize = 8 * 1024 * 1024;

/// Reads the body, keeping at most `limit` bytes. `Ok(None)`: it was larger.
async fn read_body(req: Request, limit: usize) -> Result<Option<Bytes>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_CAP.max(limit)) {
        return Ok(None);
    }
    let mut stream = req.into_body().into_data_stream();
    // One chunk is the common case (a check is a few hundred bytes): kept as it came.
    let mut first: Option<Bytes> = None;
    let mut kept = Vec::new();
    let (mut seen, mut too_large) = (0usize, false);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))?;
        seen += chunk.len();
        if !too_large && seen > limit {
            too_large = true;
            (first, kept) = (None, Vec::new());
        }
        if !too_large {
            match first.take() {
                None if kept.is_empty() => first = Some(chunk),
                None => kept.extend_from_slice(&chunk),
                Some(earlier) => {
                    kept.reserve(declared.unwrap_or(0).min(limit));
                    kept.extend_from_slice(&earlier);
                    kept.extend_from_slice(&chunk);
                }
            }
        }
        if seen > DRAIN_CAP.max(limit) {
            break;
        }
    }
    Ok((!too_large).then(|| first.unwrap_or_else(|| Bytes::from(kept))))
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let (kind, sub) = mime.split_once('/').unwrap_or((mime, ""));
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub
                .len()
                .checked_sub(5)
                .is_some_and(|at| sub.as_bytes()[at..].eq_ignore_ascii_case(b"+json")))
}

/// Parses `bytes` as `T`, naming the offending field on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would also read a struct from a JSON array (by position), and its messages
    // for `null` or `[]` name Rust types; every body here is an object.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::bad_request(
                "request body is empty; expected a JSON object",
            ));
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "request body must be a JSON object ({…})",
            ));
        }
    }
    // Most bodies parse: only a failed one is parsed again, tracking where it failed.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body at `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

fn body_limit(req: &Request) -> usize {
    req.extensions()
        .get::<BodyLimit>()
        .map_or(64 * 1024, |l| l.0)
}

/// Reads and parses the body; 413 when it is over `limit`.
async fn parse_body<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, ApiError> {
    let bytes = read_body(req, limit).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes (--max-body-bytes)"),
        )
    })?;
    parse_json(&bytes)
}

/// The body of a `/v1/*` request as `T`: 415 unless it is sent as JSON, 413 past
/// `limit` bytes, 400 naming the field that does not parse.
pub async fn read_json<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json(content_type) {
        let content_type = content_type.to_string();
        // Read (and drop) the body first, so the client can read the answer.
        let _ = read_body(req, limit).await;
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be application/json (got {})",
                if content_type.is_empty() {
                    "none".to_string()
                } else {
                    format!("{content_type:?}")
                }
            ),
        ));
    }
    parse_body(req, limit).await
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = body_limit(&req);
        read_json(req, limit).await.map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AnyJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = body_limit(&req);
        parse_body(req, limit).await.map(AnyJsonBody)
    }
}

/// The `{mc_id}` of a management path, with a bad one (e.g. invalid percent-encoding)
/// rejected in the error shape instead of axum's plain text.
pub struct ConfigId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ConfigId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid model config id in the path: {}",
                    e.body_text()
                ))
            })?;
        Ok(ConfigId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        n: u64,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        m: u64,
    }

    #[test]
    fn names_the_field() {
        let e = parse_json::<Body>(br#"{"n": 1, "inner": {"m": -3}}"#).unwrap_err();
        assert!(e.message.contains("`inner.m`"), "{}", e.message);
        let e = parse_json::<Body>(br#"{"n": "x"}"#).unwrap_err();
        assert!(e.message.contains("`n`"), "{}", e.message);
    }

    #[test]
    fn rejects_empty_and_trailing_input() {
        assert!(
            parse_json::<Body>(b"  ")
                .unwrap_err()
                .message
                .contains("empty")
        );
        assert!(parse_json::<Body>(br#"{"n": 1} x"#).is_err());
        assert!(parse_json::<Body>(b"[1,2").is_err());
        assert!(parse_json::<Body>(br#"{"n": 1e400}"#).is_err());
    }

    #[test]
    fn only_objects() {
        for body in [&b"[1, null]"[..], b"null", b"[]", b" 3", b"\"x\""] {
            let e = parse_json::<Body>(body).unwrap_err();
            assert!(e.message.contains("must be a JSON object"), "{}", e.message);
        }
        assert!(parse_json::<Body>(b" \n{\"n\": 1}").is_ok());
    }

    #[test]
    fn content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
