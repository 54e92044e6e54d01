//! The management API as `tollgate configs export|apply` call it: list (paged), create,
//! update, delete. Configs come back as views and are read as stored configs (a view
//! carries every stored field, plus usage and hashes that are ignored).

use crate::model::ModelConfig;
use serde_json::Value;
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

const CONFIGS: &str = "/api/governance/model-configs";
/// The list's largest page.
const PAGE: usize = 100;
/// One request's longest wait.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed: the server's answer (status and message), or no answer.
#[derive(Debug, Clone)]
pub enum CallError {
    Answered { status: u16, message: String },
    Unreachable(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Answered { status, message } => write!(f, "HTTP {status}: {message}"),
            CallError::Unreachable(e) => write!(f, "no answer: {e}"),
        }
    }
}

pub struct Api {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// `base`: the tollgate's URL (`http://127.0.0.1:8080`); `key`: a bearer key.
    pub fn new(base: &str, key: Option<String>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "--url must start with http:// or https:// (got {base:?})"
            ));
        }
        Ok(Api { base, key, http })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Unreachable(with_causes(&e)))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Unreachable(with_causes(&e)))?;
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        let message = json["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
        Err(CallError::Answered {
            status: status.as_u16(),
            message,
        })
    }

    /// Every config, page by page (newest first; a config written meanwhile may be
    /// missed or seen twice, so pages are joined by id).
    pub async fn list_all(&self) -> Result<Vec<ModelConfig>, CallError> {
        let mut out = Vec::new();
        let mut ids = HashSet::new();
        let mut offset = 0;
        loop {
            let path = format!("{CONFIGS}?limit={PAGE}&offset={offset}");
            let page = self.call(reqwest::Method::GET, &path, None).await?;
            let items = page["model_configs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if items.is_empty() {
                return Ok(out);
            }
            offset += items.len();
            for item in items {
                let config = stored(item)?;
                if ids.insert(config.id.clone()) {
                    out.push(config);
                }
            }
            if page["total_count"]
                .as_u64()
                .is_some_and(|t| offset as u64 >= t)
            {
                return Ok(out);
            }
        }
    }

    pub async fn create(&self, body: &Value) -> Result<ModelConfig, CallError> {
        let answer = self
            .call(reqwest::Method::POST, CONFIGS, Some(body))
            .await?;
        stored(answer["model_config"].clone())
    }

    pub async fn update(&self, id: &str, body: &Value) -> Result<ModelConfig, CallError> {
        let path = format!("{CONFIGS}/{id}");
        let answer = self.call(reqwest::Method::PUT, &path, Some(body)).await?;
        stored(answer["model_config"].clone())
    }

    pub async fn delete(&self, id: &str) -> Result<(), CallError> {
        let path = format!("{CONFIGS}/{id}");
        self.call(reqwest::Method::DELETE, &path, None)
            .await
            .map(|_| ())
    }
}

/// `error sending request …: client error (Connect): tcp connect error: Connection refused`.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A config view read as the stored config.
fn stored(view: Value) -> Result<ModelConfig, CallError> {
    serde_json::from_value(view).map_err(|e| CallError::Answered {
        status: 200,
        message: format!("unexpected model config in the answer: {e}"),
    })
}
