//! SIGTERM to a tollgate process under load: the checks in flight are answered, none
//! is lost, and the process exits 0 within its grace period.

mod common;
#[path = "common/faults.rs"]
mod faults;

use common::{Client, Process, RedisServer, eventually};
use faults::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(Default)]
struct WorkerLog {
    /// (when the whole answer was read, status, body)
    answers: Vec<(Instant, u16, Value)>,
    /// A response whose body was cut off: that is a lost answer.
    cut: Vec<String>,
    /// Why the worker stopped (the server stopped taking requests).
    ended: Option<String>,
}

async fn term_worker(url: String) -> WorkerLog {
    let http = reqwest::Client::new();
    let mut log = WorkerLog::default();
    loop {
        match http
            .post(&url)
            .json(&json!({"model": "m-term", "tokens": 1}))
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(b) => log.answers.push((
                        Instant::now(),
                        status,
                        serde_json::from_slice(&b).unwrap_or(Value::Null),
                    )),
                    Err(e) => {
                        log.cut.push(format!("{e:?}"));
                        return log;
                    }
                }
            }
            Err(e) => {
                log.ended = Some(if e.is_connect() {
                    "refused".into()
                } else {
                    format!("{e:?}")
                });
                return log;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut p = Process::spawn(
        &[
            "--redis-url",
            &url,
            "--store-timeout-ms",
            "3000",
            "--shutdown-grace-secs",
            "10",
        ],
        &[],
    )
    .await;
    let id = p
        .create(json!({"model_name": "m-term", "rate_limit": limited(10_000_000, "1h")}))
        .await;
    let check_url = p.url("/v1/check");
    let workers: Vec<_> = (0..6)
        .map(|_| tokio::spawn(term_worker(check_url.clone())))
        .collect();
    // Load is flowing...
    let http = reqwest::Client::new();
    let metrics_url = p.url("/metrics");
    let flowing = || async {
        let text = http
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric(&text, "tollgate_checks_total", &[("decision", "allowed")]) >= 100.0
    };
    assert!(eventually(Duration::from_secs(10), flowing).await);
    // ...then Redis stalls so that checks are in flight inside tollgate when it is told
    // to stop: they must still be answered.
    let _: () = redis.cmd(&["CLIENT", "PAUSE", "600"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sigterm = Instant::now();
    p.signal("TERM");

    let mut logs = Vec::new();
    for w in workers {
        logs.push(w.await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tollgate did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exited = sigterm.elapsed();
    assert!(status.success(), "exit status {status}: {}", p.stderr());

    let mut allowed = 0u64;
    let mut after_term = 0;
    let mut endings = std::collections::BTreeMap::<String, usize>::new();
    for log in &logs {
        assert!(log.cut.is_empty(), "answers cut off: {:?}", log.cut);
        for (at, status, body) in &log.answers {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["allowed"], true, "{body}");
            assert!(body.get("fallback").is_none(), "{body}");
            allowed += 1;
            after_term += (*at > sigterm) as usize;
        }
        *endings
            .entry(log.ended.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert!(
        after_term >= 1,
        "no check was in flight at SIGTERM; the test proved nothing"
    );

    // Every check Redis counted got its answer, and every answer was counted.
    let mut s = common::settings();
    s.redis_url = Some(url);
    let reader = tollgate::start(s).await.unwrap();
    let c = Client::new(format!("http://{}", reader.addr));
    let used = c.config(&id).await["rate_limit"]["request_current_usage"].clone();
    assert_eq!(
        used, allowed,
        "Redis counted {used}, clients were answered {allowed}"
    );
    eprintln!(
        "SIGTERM: {allowed} checks answered ({after_term} finished after the signal), exit 0 after {exited:?}; workers ended by {endings:?}"
    );
}
