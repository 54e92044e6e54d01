//! A small JSON client for tollgate's HTTP API: every answer as status, headers and a
//! JSON body.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// Answer of a request: status, headers, JSON body (Null when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error message of an error answer (Bifrost shape), asserting the shape.
    pub fn message(&self) -> &str {
        assert_eq!(
            self.body["is_bifrost_error"],
            Value::Bool(false),
            "error shape: {}",
            self.body
        );
        assert_eq!(
            self.body["status_code"].as_u64(),
            Some(self.status.as_u16() as u64),
            "{}",
            self.body
        );
        self.body["error"]["message"]
            .as_str()
            .expect("error.message")
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    key: Option<String>,
}

impl Client {
    pub fn new(base: String) -> Self {
        Client {
            base,
            http: reqwest::Client::new(),
            key: None,
        }
    }

    pub fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let req = match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        };
        let resp = req.send().await.expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Creates a config and returns its id, asserting success.
    pub async fn create(&self, body: Value) -> String {
        let a = self.post("/api/governance/model-configs", &body).await;
        assert_eq!(a.status, 200, "create {body}: {}", a.body);
        a.body["model_config"]["id"].as_str().unwrap().to_string()
    }

    pub async fn config(&self, id: &str) -> Value {
        let a = self
            .get(&format!("/api/governance/model-configs/{id}"))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["model_config"].clone()
    }

    pub async fn check(&self, body: Value) -> Answer {
        self.post("/v1/check", &body).await
    }
}
