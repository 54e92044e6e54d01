//! An OpenAI-compatible upstream of the test's own: `POST /v1/chat/completions`, plain
//! or `stream: true` (SSE chunks, and a last chunk with `usage` when
//! `stream_options.include_usage` is set, as LiteLLM asks). Each answer reports a fixed
//! usage: `prompt_tokens` as set by the test, `completion_tokens` = the request's
//! `max_tokens` (or 20). A model whose name starts with `fail` answers 500 after a pause,
//! so the reservation can be seen before it is given back.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Completion tokens reported when the request sets no `max_tokens`.
pub const DEFAULT_COMPLETION: u64 = 20;
/// How long a `fail…` model takes to fail.
pub const FAIL_AFTER: Duration = Duration::from_millis(800);

#[derive(Default)]
pub struct Upstream {
    pub port: u16,
    prompt_tokens: AtomicU64,
    calls: parking_lot::Mutex<HashMap<String, u64>>,
}

impl Upstream {
    pub async fn start() -> Arc<Upstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(Upstream {
            port: listener.local_addr().unwrap().port(),
            ..Default::default()
        });
        let app = axum::Router::new()
            .route(
                "/v1/chat/completions",
                axum::routing::post(chat_completions),
            )
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        state
    }

    /// The `prompt_tokens` every answer reports from now on.
    pub fn set_prompt_tokens(&self, n: u64) {
        self.prompt_tokens.store(n, Ordering::SeqCst);
    }

    /// Requests that reached the upstream for `model` (refused ones never do).
    pub fn calls(&self, model: &str) -> u64 {
        self.calls.lock().get(model).copied().unwrap_or(0)
    }

    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

async fn chat_completions(State(up): State<Arc<Upstream>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or("").to_string();
    *up.calls.lock().entry(model.clone()).or_default() += 1;
    if model.starts_with("fail") {
        tokio::time::sleep(FAIL_AFTER).await;
        let error = json!({"error": {"message": "upstream failure", "type": "server_error"}});
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(error)).into_response();
    }
    let prompt = up.prompt_tokens.load(Ordering::SeqCst);
    let completion = body["max_tokens"]
        .as_u64()
        .or(body["max_completion_tokens"].as_u64())
        .unwrap_or(DEFAULT_COMPLETION);
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion});
    let head = json!({"id": "chatcmpl-1", "created": 1_700_000_000, "model": model});
    if body["stream"].as_bool() != Some(true) {
        let mut answer = head;
        answer["object"] = json!("chat.completion");
        answer["choices"] = json!([{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "Hello"}}]);
        answer["usage"] = usage;
        return Json(answer).into_response();
    }
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = head.clone();
        c["object"] = json!("chat.completion.chunk");
        c["choices"] = choices;
        if let Some(u) = usage {
            c["usage"] = u.clone();
        }
        format!("data: {c}\n\n")
    };
    let mut sse = String::new();
    for piece in ["Hel", "lo"] {
        sse += &chunk(
            json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}]),
            None,
        );
    }
    sse += &chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        None,
    );
    if body["stream_options"]["include_usage"].as_bool() == Some(true) {
        sse += &chunk(json!([]), Some(&usage));
    }
    sse += "data: [DONE]\n\n";
    ([("content-type", "text/event-stream")], sse).into_response()
}
