//! The user-space work of one `POST /v1/check` of 3 matching configs (9 limits) on the
//! embedded store, in process: tollgate's service as `axum::serve` calls it (the hot
//! routes, the body, the decision, the answer and its headers) with the Prometheus
//! recorder installed, but no sockets and no HTTP parsing or writing. What
//! `sidecar_cpu` measures is this plus hyper and the kernel's loopback TCP; this one
//! leaves out the kernel, whose share of a check is about half and far noisier.
//!
//! Run: `cargo bench --bench check_service`. Never run by CI; nothing here asserts on
//! time.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;
use tollgate::api::service;
use tollgate::app::App;
use tollgate::settings::StoreErrorPolicy;
use tollgate::store::memory::MemoryStore;
use tower_service::Service;

/// As the server runs: mimalloc (`main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHECK_BODY: &str =
    r#"{"model":"gpt-4o","virtual_key":"vk-1","user":"u-1","tokens":10,"cost":0.001}"#;

fn request(method: &str, path: &str, body: String) -> axum::extract::Request {
    axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("host", "127.0.0.1")
        .body(axum::body::Body::new(Full::new(Bytes::from(body))))
        .expect("a valid request")
}

fn check_service(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _ = tollgate::metrics::handle();
    let app = Arc::new(App::new(
        MemoryStore::new(),
        Vec::new(),
        StoreErrorPolicy::Allow,
    ));
    rt.block_on(app.refresh())
        .expect("the embedded store loads");
    let mut svc = service(app, 1 << 20);
    let limits = json!({
        "rate_limit": {"request_max_limit": 1_000_000_000u64, "request_reset_duration": "1m",
            "token_max_limit": 1_000_000_000_000u64, "token_reset_duration": "1m"},
        "budgets": [{"max_limit": 1_000_000.0, "reset_duration": "1d"}]
    });
    for scope in [
        json!({"model_name": "*", "scope": "global"}),
        json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "vk-1"}),
        json!({"model_name": "*", "scope": "user", "scope_id": "u-1"}),
    ] {
        let mut body = limits.clone();
        body.as_object_mut()
            .expect("an object")
            .extend(scope.as_object().expect("an object").clone());
        let path = "/api/governance/model-configs";
        let created = rt
            .block_on(svc.call(request("POST", path, body.to_string())))
            .expect("infallible");
        assert!(created.status().is_success(), "{}", created.status());
    }
    let mut check = || {
        rt.block_on(async {
            let answer = svc
                .call(request("POST", "/v1/check", CHECK_BODY.into()))
                .await
                .expect("infallible");
            assert_eq!(answer.status(), 200);
            let body = answer.into_body().collect().await.expect("a body");
            black_box(body.to_bytes())
        })
    };
    let answer: serde_json::Value = serde_json::from_slice(&check()).expect("JSON");
    assert_eq!(
        answer["limits"].as_array().map(Vec::len),
        Some(9),
        "{answer}"
    );
    c.bench_function("service/check_3_configs_9_limits_memory", |b| {
        b.iter(&mut check)
    });
}

criterion_group!(benches, check_service);
criterion_main!(benches);
