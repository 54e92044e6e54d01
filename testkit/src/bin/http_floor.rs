//! The HTTP floor under a check: a server on tollgate's own stack (`axum::serve`, the
//! same tokio runtime settings) that does no work at all. It answers `POST /v1/check`
//! with fixed bytes the size and shape of tollgate's 9-limit answer (same status, same
//! headers), and everything else with `200 {}`. What `benches/sidecar_cpu` measures for
//! it is what the sockets, the kernel and HTTP/1.1 cost per check on this machine:
//! tollgate's own work is the difference.
//!
//! ```text
//! cargo build --release -p tollgate-testkit --bin http_floor
//! cargo bench --bench sidecar_cpu -- --store memory --transport tcp,unix \
//!     --tollgate floor=target/release/http_floor,tollgate=target/release/tollgate
//! ```
//!
//! It takes tollgate's `--listen`, `--listen-unix` and `--worker-threads` and ignores
//! every other flag.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use std::convert::Infallible;

/// As tollgate runs: mimalloc (`main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The answer's headers, as tollgate writes them for the bench's 9-limit check: built
/// at compile time, as tollgate's own names are (`from_static` validates on every call).
const HEADERS: [(HeaderName, HeaderValue); 8] = [
    header("ratelimit-policy", "\"requests\";q=1000000000;w=60"),
    header("ratelimit", "\"requests\";r=999999999;t=60"),
    header("x-ratelimit-limit-requests", "1000000000"),
    header("x-ratelimit-remaining-requests", "999999999"),
    header("x-ratelimit-reset-requests", "1m0s"),
    header("x-ratelimit-limit-tokens", "1000000000000"),
    header("x-ratelimit-remaining-tokens", "999999999990"),
    header("x-ratelimit-reset-tokens", "1m0s"),
];

const JSON: HeaderValue = HeaderValue::from_static("application/json");

const fn header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

/// An answer body of tollgate's shape for 3 configs of 3 limits each (~2.6 KB).
fn check_body() -> Bytes {
    let mut limits = Vec::new();
    for (scope, scope_id, model) in [
        ("global", "null", "*"),
        ("virtual_key", "\"vk-1\"", "gpt-4o"),
        ("user", "\"u-1\"", "*"),
    ] {
        let id = "7e8758de-645a-46c9-b006-e0b4ea34e472";
        let common = format!(
            r#""config_id":"{id}","scope":"{scope}","scope_id":{scope_id},"model_name":"{model}","provider":null"#
        );
        limits.push(format!(
            r#"{{{common},"kind":"requests","reset_duration":"1m","max":1000000000,"enforcement":"enforce","used":1,"remaining":999999999,"reset_after_ms":60000}}"#
        ));
        limits.push(format!(
            r#"{{{common},"kind":"tokens","reset_duration":"1m","max":1000000000000,"enforcement":"enforce","used":10,"remaining":999999999990,"reset_after_ms":60000}}"#
        ));
        limits.push(format!(
            r#"{{{common},"kind":"budget","budget_id":"{id}","reset_duration":"1d","max":1000000.0,"enforcement":"enforce","used":0.001,"remaining":999999.999,"reset_after_ms":86270395}}"#
        ));
    }
    let body = format!(
        r#"{{"allowed":true,"reason":null,"retry_after_ms":null,"limits":[{}],"reserved_at_ms":1796296474640}}"#,
        limits.join(",")
    );
    Bytes::from(body)
}

/// Reads the request's body whole, as tollgate does, and answers with fixed bytes.
async fn answer(req: Request, check: Bytes) -> Result<Response, Infallible> {
    let is_check = req.uri().path() == "/v1/check";
    let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
    let mut response = Response::new(Body::from(if is_check {
        check
    } else {
        Bytes::from_static(b"{}")
    }));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, JSON);
    if is_check {
        for (name, value) in HEADERS {
            headers.insert(name, value);
        }
    }
    Ok(response)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut unix, mut threads) = (None, None, 1usize);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--listen" => listen = args.next(),
            "--listen-unix" => unix = args.next(),
            "--worker-threads" => {
                threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--worker-threads N");
            }
            _ => {}
        }
    }
    let listen = listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let check = check_body();
        let service = tower::service_fn(move |req| answer(req, check.clone()));
        if let Some(path) = unix {
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path).expect("bind the socket");
            let service = service.clone();
            tokio::spawn(async move {
                axum::serve(listener, axum::ServiceExt::into_make_service(service)).await
            });
        }
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
        };
        axum::serve(listener, axum::ServiceExt::into_make_service(service))
            .await
            .expect("serve");
    });
}
