//! `--listen-unix`: a tollgate process answers the same API on a Unix-domain socket as
//! on TCP, with one set of counters and the same API keys; it refuses a path that is not
//! a socket (leaving the file alone), replaces a stale socket, and removes its socket
//! when it stops.

mod common;

use bytes::Bytes;
use common::{Process, RedisServer, eventually, tollgate_binary};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// One request over the socket at `sock`: (status, JSON body).
async fn over_socket(
    sock: &Path,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let stream = tokio::net::UnixStream::connect(sock)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1.1 connection");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let answer = sender
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .expect("an answer");
    let status = answer.status().as_u16();
    let bytes = answer.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn one_store(redis: Option<&RedisServer>) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tollgate.sock");
    // A socket left behind by a tollgate that was killed: replaced at start.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let url = redis.map(RedisServer::url);
    let mut args = vec!["--listen-unix", sock.to_str().unwrap(), "--api-key", "k-1"];
    if let Some(url) = &url {
        args.extend(["--redis-url", url]);
    }
    let tg = Process::spawn(&args, &[]).await;
    let tcp = tg.client.clone().with_key("k-1");
    tcp.create(json!({"model_name": "m-unix", "scope": "global",
        "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1h"}}))
        .await;
    let check = json!({"model": "m-unix"});
    let configs = "/api/governance/model-configs";
    // Configs reach the checks within a poll.
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, answer) = over_socket(
                &sock,
                "POST",
                "/v1/check",
                None,
                Some(json!({
                "model": "m-unix", "dry_run": true})),
            )
            .await;
            answer["limits"].as_array().is_some_and(|l| l.len() == 1)
        })
        .await,
        "the config never applied on the socket"
    );
    for used in [1, 2] {
        let (status, answer) =
            over_socket(&sock, "POST", "/v1/check", None, Some(check.clone())).await;
        assert_eq!(
            (status, answer["limits"][0]["used"].as_i64()),
            (200, Some(used))
        );
    }
    // The third over TCP: the same counter.
    let answer = tcp.check(check.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["limits"][0]["used"], 3);
    let (status, answer) = over_socket(&sock, "POST", "/v1/check", None, Some(check)).await;
    assert_eq!(
        (status, answer["reason"].as_str()),
        (429, Some("request_limited"))
    );
    // The management API wants its key on the socket as on TCP.
    let (status, answer) = over_socket(&sock, "GET", configs, None, None).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = over_socket(&sock, "GET", configs, Some("k-1"), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["count"], 1, "{answer}");
    // A stop removes the socket.
    tg.signal("TERM");
    let mut tg = tg;
    let exited = tokio::task::spawn_blocking(move || tg.child.wait().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(15), exited)
        .await
        .expect("stopped within its grace")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "the socket outlived the process");
}

#[tokio::test]
async fn the_api_on_a_unix_socket_shares_counters_and_keys_with_tcp() {
    one_store(None).await;
    let redis = RedisServer::start();
    one_store(Some(&redis)).await;
}

#[test]
fn a_path_that_is_not_a_socket_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.sock");
    std::fs::write(&file, "an operator's file").unwrap();
    let port = common::free_port().to_string();
    let out = std::process::Command::new(tollgate_binary())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--listen-unix", file.to_str().unwrap()])
        .output()
        .expect("tollgate runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started anyway: {stderr}");
    assert!(
        stderr.contains("exists and is not a socket"),
        "unclear error: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "an operator's file"
    );
}
