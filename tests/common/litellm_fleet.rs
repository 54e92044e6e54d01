//! The fleet of tests/litellm.rs: two LiteLLM proxies with the tollgate hook, each on
//! its own tollgate, the two tollgates on one Redis, an upstream of the test's own; and
//! the requests and assertions its scenarios share.

use crate::common::{Backend, Client, Tollgate, eventually};
use crate::litellm::{Proxy, Reply};
use crate::openai_upstream::Upstream;
use futures_util::future::join_all;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Completion tokens the hook reserves for a request without `max_tokens`.
pub const DEFAULT_COMPLETION: u64 = 100;
/// Dollars per prompt / completion token of the priced model groups.
pub const PRICE_IN: f64 = 0.001;
pub const PRICE_OUT: f64 = 0.002;

pub fn messages() -> Value {
    json!([{"role": "user", "content": "How many tokens is this question?"}])
}

/// One proxy's config.yaml: model groups on the upstream, the hook pointed at `tollgate`.
pub fn config(up: &Upstream, tollgate: &str, fail_open: bool) -> String {
    let base = up.api_base();
    let group = |name: &str, extra: &str| {
        format!(
            "  - model_name: {name}\n    litellm_params:\n      model: openai/{name}\n      \
             api_base: {base}\n      api_key: sk-upstream\n{extra}"
        )
    };
    let priced = format!(
        "      input_cost_per_token: {PRICE_IN}\n      output_cost_per_token: {PRICE_OUT}\n"
    );
    let models: Vec<String> = [
        group("req", ""),
        group("tok", ""),
        group("bud", &priced),
        group("vk", ""),
        group("stream", ""),
        group("fail", &priced),
        // LiteLLM's own limit, enforced by its router in each process (pre-call checks).
        group("rpm", "      rpm: 3\n"),
        group("down", ""),
    ]
    .into();
    format!(
        "model_list:\n{}\
litellm_settings:
  num_retries: 0
  callbacks: tollgate_client.litellm_hook.proxy_handler
callback_settings:
  tollgate:
    url: {tollgate}
    fail_open: {fail_open}
    timeout_ms: 1000
    default_completion_tokens: {DEFAULT_COMPLETION}
router_settings:
  num_retries: 0
  enable_pre_call_checks: true
general_settings:
  master_key: sk-litellm-master
  custom_auth: test_auth.user_api_key_auth
",
        models.concat()
    )
}

pub struct Fleet {
    pub tollgate_a: Tollgate,
    pub tollgate_b: Option<tollgate::Running>,
    pub b: Client,
    pub up: Arc<Upstream>,
    /// fail_open: true, on tollgate A.
    pub p1: Proxy,
    /// fail_open: false, on tollgate B.
    pub p2: Proxy,
    /// Prompt tokens of `messages()` as the hook counts them (LiteLLM's `token_counter`),
    /// learnt from the first reservation; the upstream then reports the same.
    pub prompt: u64,
}

impl Fleet {
    pub async fn start() -> Fleet {
        let tollgate_a = Tollgate::start(Backend::Redis).await;
        let tollgate_b = tollgate_a.replica(|_| {}).await;
        let b = Client::new(format!("http://{}", tollgate_b.addr));
        let up = Upstream::start().await;
        let (c1, c2) = (
            config(&up, &tollgate_a.base, true),
            config(&up, &b.base, false),
        );
        let started = Instant::now();
        let (p1, p2) = tokio::join!(Proxy::start("p1", &c1), Proxy::start("p2", &c2));
        eprintln!("two LiteLLM proxies ready in {:?}", started.elapsed());
        Fleet {
            tollgate_a,
            tollgate_b: Some(tollgate_b),
            b,
            up,
            p1,
            p2,
            prompt: 0,
        }
    }

    /// Creates a config on tollgate A and waits until both replicas enforce it.
    pub async fn create(&self, config: Value) -> String {
        let model = config["model_name"].as_str().unwrap().to_string();
        let id = self.tollgate_a.create(config).await;
        // `from_memory=true` answers from the replica's own snapshot: what its checks use.
        let path = format!("/api/governance/model-configs?from_memory=true&search={model}");
        for replica in [&self.tollgate_a.client, &self.b] {
            let seen = eventually(Duration::from_secs(5), || async {
                let list = replica.get(&path).await.body["model_configs"].clone();
                let ids = list.as_array().cloned().unwrap_or_default();
                ids.iter().any(|c| c["id"] == id.as_str())
            });
            assert!(seen.await, "{} enforces config {id}", replica.base);
        }
        id
    }

    pub fn proxy(&self, i: usize) -> &Proxy {
        if i.is_multiple_of(2) {
            &self.p1
        } else {
            &self.p2
        }
    }

    /// `n` requests at once, alternating between the proxies.
    pub async fn burst(&self, n: usize, key: &str, body: Value) -> Vec<Reply> {
        join_all((0..n).map(|i| self.proxy(i).chat(key, &body))).await
    }

    /// `used` of the `kind` limit that matches `identity`, as tollgate B sees it.
    pub async fn used(&self, identity: Value, kind: &str) -> f64 {
        let mut body = identity;
        body["requests"] = json!(0);
        body["dry_run"] = json!(true);
        let a = self.b.check(body).await;
        let limits = a.body["limits"].as_array().cloned().unwrap_or_default();
        limits
            .iter()
            .find(|l| l["kind"] == kind)
            .and_then(|l| l["used"].as_f64())
            .unwrap_or_else(|| panic!("no {kind} limit in {}", a.body))
    }

    /// Waits until `used` of `kind` is `want` (settlements run after the answer).
    pub async fn settles_to(&self, identity: Value, kind: &str, want: f64) {
        let ok = eventually(Duration::from_secs(10), || async {
            (self.used(identity.clone(), kind).await - want).abs() < 1e-9
        });
        assert!(
            ok.await,
            "{kind} of {identity}: want {want}, have {}",
            self.used(identity.clone(), kind).await
        );
    }
}

pub fn chat(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": messages()});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

pub fn statuses(replies: &[Reply]) -> (usize, usize) {
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let limited = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(
        ok + limited,
        replies.len(),
        "only 200 and 429: {:?}",
        replies
            .iter()
            .map(|r| (r.status, &r.text))
            .collect::<Vec<_>>()
    );
    (ok, limited)
}

/// A 429 of the hook: OpenAI's error shape, `Retry-After` in whole seconds within the window.
pub fn assert_denial(r: &Reply, error_type: &str, window_secs: u64) {
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body["error"]["type"], error_type, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "429", "{}", r.text);
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After on a 429: {:?}", r.headers));
    assert!((1..=window_secs).contains(&retry), "Retry-After {retry}");
}
