//! The binary as an operator meets it: flags and environment, refusals, `--help`, and
//! the embedded store's state file across restarts.

mod common;

use common::{Client, Process, free_port};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const CONFIGS: &str = "/api/governance/model-configs";

fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

#[test]
fn help_lists_every_setting_with_its_variable() {
    let out = tollgate().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "TOLLGATE_LISTEN"),
        ("--redis-url", "TOLLGATE_REDIS_URL"),
        ("--api-key", "TOLLGATE_API_KEY"),
        ("--key-prefix", "TOLLGATE_KEY_PREFIX"),
        ("--state-file", "TOLLGATE_STATE_FILE"),
        ("--usage-metrics", "TOLLGATE_USAGE_METRICS"),
        ("--on-store-error", "TOLLGATE_ON_STORE_ERROR"),
        ("--insecure-no-auth", "TOLLGATE_INSECURE_NO_AUTH"),
        ("--configs-file", "TOLLGATE_CONFIGS_FILE"),
        ("--configs-file-prune", "TOLLGATE_CONFIGS_FILE_PRUNE"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "--help lacks {flag} / {env}:\n{help}"
        );
    }
}

#[test]
fn refuses_a_public_address_without_an_api_key() {
    let port = free_port().to_string();
    let out = tollgate()
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing") && err.contains("--api-key") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    // The variable counts as a key too: the address passes, and start-up stops at the
    // next (deliberately contradictory) setting instead.
    let out = tollgate()
        .args(["--listen", "0.0.0.0:1", "--redis-url", "http://127.0.0.1:1"])
        .env("TOLLGATE_API_KEY", "k")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        !err.contains("refusing") && err.contains("--redis-url"),
        "{err}"
    );
    // So does TOLLGATE_INSECURE_NO_AUTH, spelled as operators spell booleans.
    for (value, passes) in [
        ("1", true),
        ("yes", true),
        ("on", true),
        ("0", false),
        ("false", false),
    ] {
        let out = tollgate()
            .args(["--listen", "0.0.0.0:1", "--redis-url", "http://127.0.0.1:1"])
            .env("TOLLGATE_INSECURE_NO_AUTH", value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(err.contains("refusing"), !passes, "{value}: {err}");
        assert!(err.contains("--redis-url") == passes, "{value}: {err}");
    }
}

#[test]
fn refuses_contradictory_or_invalid_settings() {
    let out = tollgate()
        .args(["--redis-url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--redis-url"));
    let out = tollgate()
        .args(["--on-store-error", "sometimes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow"));
    let out = tollgate()
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn a_flag_wins_over_its_variable() {
    // The variable asks for auth with key "from-env"; the flag replaces it with "from-flag".
    let p = Process::spawn(
        &["--api-key", "from-flag"],
        &[("TOLLGATE_API_KEY", "from-env")],
    )
    .await;
    assert_eq!(
        p.client
            .clone()
            .with_key("from-flag")
            .get(CONFIGS)
            .await
            .status,
        200
    );
    assert_eq!(
        p.client
            .clone()
            .with_key("from-env")
            .get(CONFIGS)
            .await
            .status,
        401
    );
    // Variables alone configure it too (comma-separated keys).
    let q = Process::spawn(
        &[],
        &[
            ("TOLLGATE_API_KEY", "a,b"),
            ("TOLLGATE_ON_STORE_ERROR", "deny"),
        ],
    )
    .await;
    assert_eq!(
        q.client.clone().with_key("b").get(CONFIGS).await.status,
        200
    );
    assert_eq!(q.get(CONFIGS).await.status, 401);
}

#[tokio::test]
async fn state_file_keeps_configs_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state_arg = state.to_str().unwrap();
    let mut first = Process::spawn(&["--state-file", state_arg], &[]).await;
    let kept = first
        .create(json!({"model_name": "gpt-4o", "rate_limit": {"request_max_limit": 2, "request_reset_duration": "1h"},
                       "budgets": [{"max_limit": 5, "reset_duration": "monthly"}]}))
        .await;
    let gone = first.create(json!({"model_name": "temp"})).await;
    let edited = first.create(json!({"model_name": "claude"})).await;
    assert_eq!(first.delete(&format!("{CONFIGS}/{gone}")).await.status, 200);
    assert_eq!(
        first
            .put(
                &format!("{CONFIGS}/{edited}"),
                &json!({"provider": "anthropic"})
            )
            .await
            .status,
        200
    );
    let before = first.config(&kept).await;
    // A crash: no chance to flush anything. The file is written before a write answers.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("state.json")],
        "no temp files left behind"
    );

    let second = Process::spawn(&["--state-file", state_arg], &[]).await;
    let list = second.get(CONFIGS).await;
    assert_eq!(list.body["total_count"], 2);
    let after = second.config(&kept).await;
    for field in ["id", "model_name", "budgets", "created_at"] {
        if field == "budgets" {
            assert_eq!(after["budgets"][0]["id"], before["budgets"][0]["id"]);
            assert_eq!(
                after["budgets"][0]["max_limit"],
                before["budgets"][0]["max_limit"]
            );
        } else {
            assert_eq!(after[field], before[field], "{field}");
        }
    }
    assert_eq!(second.config(&edited).await["provider"], "anthropic");
    assert_eq!(second.get(&format!("{CONFIGS}/{gone}")).await.status, 404);
    // And it enforces them.
    assert_eq!(second.check(json!({"model": "gpt-4o"})).await.status, 200);
    assert_eq!(second.check(json!({"model": "gpt-4o"})).await.status, 200);
    assert_eq!(second.check(json!({"model": "gpt-4o"})).await.status, 429);
}

/// Starts tollgate on `state` and expects it to refuse; its stderr.
fn refused_start_with_state_file(state: &std::path::Path) -> String {
    let out = tollgate()
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--state-file")
        .arg(state)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "tollgate started on {}",
        state.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_corrupt_state_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, "{ not json").unwrap();
    let err = refused_start_with_state_file(&state);
    assert!(
        err.contains("state file") && err.contains("not valid"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{ not json",
        "left untouched"
    );
}

#[test]
fn a_state_file_in_a_missing_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("no-such-dir").join("state.json");
    let err = refused_start_with_state_file(&state);
    assert!(
        err.contains("cannot write state file") && err.contains("no-such-dir"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unwritable_state_file_is_a_503_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let state = sub.join("state.json");
    let p = Process::spawn(&["--state-file", state.to_str().unwrap()], &[]).await;
    p.create(json!({"model_name": "a"})).await;
    // Take the directory away: the next write cannot be made durable.
    std::fs::remove_dir_all(&sub).unwrap();
    let a = p.post(CONFIGS, &json!({"model_name": "b"})).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.message().contains("state file"));
    let list = p.get(CONFIGS).await;
    assert_eq!(
        list.body["total_count"], 1,
        "the failed write is not applied in memory either"
    );
    let mem = p.get(&format!("{CONFIGS}?from_memory=true")).await;
    assert_eq!(mem.body["total_count"], 1);
}

#[tokio::test]
async fn starts_without_redis_and_becomes_ready_when_it_appears() {
    // Redis down at start: tollgate starts (health 200, ready 503) instead of crash-looping.
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let p = Process::spawn(&["--redis-url", &url, "--store-timeout-ms", "200"], &[]).await;
    assert_eq!(p.get("/health").await.status, 200);
    let ready = p.get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.body["status"], "not_ready");
    let mut redis = common::RedisServer::start();
    // Bring a Redis up on the port tollgate was given.
    redis.kill();
    redis.port = port;
    redis.restart();
    let client: &Client = &p;
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            client.get("/ready").await.status == 200
        })
        .await,
        "ready once Redis is reachable"
    );
    assert_eq!(
        p.post(CONFIGS, &json!({"model_name": "m"})).await.status,
        200
    );
}

#[tokio::test]
async fn rediss_urls_connect_over_tls() {
    // A throwaway self-signed certificate and a TLS-only redis-server of the test's own.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    /// The server goes with the test, whether it passes or panics.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let port = free_port();
    let _server = KillOnDrop(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-auth-clients",
                "no",
                "--save",
                "",
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("rediss://127.0.0.1:{port}/#insecure");
    let p = Process::spawn(&["--redis-url", &url], &[]).await;
    let client: &Client = &p;
    let ready = common::eventually(Duration::from_secs(10), || async {
        client.get("/ready").await.status == 200
    })
    .await;
    assert!(ready, "ready over TLS: {}", p.get("/ready").await.body);
    p.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}}))
        .await;
    assert_eq!(p.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(
        p.check(json!({"model": "m"})).await.status,
        429,
        "enforced through the TLS Redis"
    );
}
