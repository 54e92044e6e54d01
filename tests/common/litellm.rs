//! Real LiteLLM proxies (the `litellm[proxy]` PyPI package, installed into target/pyenv
//! by scripts/test.sh) for the tests: each one its own process on a free port, with a
//! config.yaml written by the test and the hook of `clients/python` loaded from this
//! checkout's source (so a stale installed copy can never be what is tested).
#![allow(dead_code)]

use crate::common::free_port;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Keys the proxies accept, as LiteLLM virtual keys with these aliases (see `AUTH`).
pub const KEY_A: &str = "sk-team-a";
pub const KEY_B: &str = "sk-team-b";

/// A `custom_auth` for the proxies: LiteLLM's virtual keys need its database, which
/// these tests do not run; this gives each key the alias and team it would have there.
const AUTH: &str = r#"
from litellm.proxy._types import UserAPIKeyAuth

KEYS = {"sk-team-a": ("key-a", "team-a"), "sk-team-b": ("key-b", "team-b")}

async def user_api_key_auth(request, api_key: str) -> UserAPIKeyAuth:
    alias, team = KEYS[api_key]
    return UserAPIKeyAuth(api_key=api_key, key_alias=alias, team_alias=team, team_id=team)
"#;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A program of the test virtualenv, or a loud failure that says how to get it.
pub fn venv_program(name: &str) -> PathBuf {
    let path = repo().join("target/pyenv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh (it installs litellm[proxy] and \
         clients/python into target/pyenv), or \
         `target/pyenv/bin/python -m pip install 'litellm[proxy]==1.108.7' ./clients/python`",
        path.display()
    );
    path
}

/// Environment of every Python process of these tests.
fn python_env(cmd: &mut Command) -> &mut Command {
    cmd.env("PYTHONPATH", repo().join("clients/python/src"))
        // The machine is offline: use the cost map LiteLLM ships instead of fetching one.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("LITELLM_MASTER_KEY")
}

/// An answer of the proxy: status, headers, JSON body (or the raw text in `text`).
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A LiteLLM proxy process, killed (with its process group) when dropped.
pub struct Proxy {
    pub name: &'static str,
    pub base: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts `litellm --config` with `config` (YAML) beside the auth module, waiting
    /// until `/health/liveliness` answers. Retries on another port if its was taken.
    pub async fn start(name: &'static str, config: &str) -> Proxy {
        let litellm = venv_program("litellm");
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("config.yaml"), config).unwrap();
            std::fs::write(dir.path().join("test_auth.py"), AUTH).unwrap();
            let port = free_port();
            let mut cmd = Command::new(&litellm);
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let child = python_env(&mut cmd)
                .current_dir(dir.path())
                .args(["--config", "config.yaml", "--host", "127.0.0.1"])
                .args(["--port", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.path().join("proxy.log")).unwrap())
                .stderr(std::fs::File::create(dir.path().join("proxy.err")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", litellm.display()));
            let mut proxy = Proxy {
                name,
                base: format!("http://127.0.0.1:{port}"),
                child,
                dir,
            };
            if proxy.wait_ready().await {
                return proxy;
            }
            assert!(
                proxy.log().contains("address already in use"),
                "LiteLLM proxy {name} did not start:\n{}",
                proxy.log()
            );
        }
        panic!("no free port for LiteLLM proxy {name} after 3 attempts");
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(120);
        let http = reqwest::Client::new();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let url = format!("{}/health/liveliness", self.base);
            if let Ok(r) = http.get(url).send().await
                && r.status() == 200
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "LiteLLM proxy {} not ready after 120 s:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Both of the process's output streams, for failure messages.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("proxy.log"), read("proxy.err"))
    }

    /// `POST /v1/chat/completions` with virtual key `key`.
    pub async fn chat(&self, key: &str, body: &Value) -> Reply {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("proxy {} did not answer: {e}", self.name));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
