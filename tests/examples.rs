//! Every file of `examples/` does what its comments say: each configs file passes
//! `tollgate configs validate`, and `first-session.sh` (the README's curl session) runs
//! against a tollgate on the embedded store, is refused with a 429 on its third check,
//! and settles its usage. An example that no longer works misleads exactly the reader
//! who is new.

mod common;

use common::{Backend, Tollgate};
use std::path::PathBuf;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The configs files of `examples/`: `configs*.yaml`, `configs*.yml`, `configs*.json`.
fn configs_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples())
        .expect("examples/")
        .map(|e| e.expect("an examples/ entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("configs")
                && [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_configs_file_validates() {
    let files = configs_files();
    assert!(!files.is_empty(), "examples/ has a configs file");
    for file in files {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["configs", "validate"])
            .arg(&file)
            .output()
            .expect("run tollgate configs validate");
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const KEY: &str = "first-session-key";

#[tokio::test]
async fn first_session_runs_and_meets_a_429() {
    let t = Tollgate::start_with(Backend::Memory, |s| s.api_keys = vec![KEY.into()]).await;
    let out = tokio::process::Command::new("bash")
        .arg(examples().join("first-session.sh"))
        .env("TOLLGATE_URL", &t.client.base)
        .env("TOLLGATE_API_KEY", KEY)
        .output()
        .await
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "first-session.sh failed:\n{stdout}\n{stderr}"
    );
    for expected in [
        "\"message\":\"Model config created successfully\"",
        "check 1: 200",
        "check 2: 200",
        "HTTP/1.1 429",
        "retry-after:",
        "\"reason\":\"request_limited\"",
        "\"recorded\":true",
        "\"token_delta\":-80",
    ] {
        assert!(
            stdout.contains(expected),
            "first-session.sh printed no {expected:?}:\n{stdout}"
        );
    }
    let left = t
        .client
        .clone()
        .with_key(KEY)
        .get("/api/governance/model-configs")
        .await;
    assert_eq!(left.status, 200, "{}", left.body);
    assert_eq!(
        left.body["total_count"], 0,
        "the session deletes its config: {}",
        left.body
    );
}
