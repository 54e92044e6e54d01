//! The Python client of `clients/python` against a real tollgate: its pytest file
//! `test_live_tollgate.py`, run with this tollgate's URL (reserve, deny with headers,
//! settle, a retried report applied once, release; sync and async).

mod common;
#[path = "common/litellm.rs"]
mod litellm;

use common::{Backend, Tollgate};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_reserves_settles_and_releases_against_a_real_tollgate() {
    let t = Tollgate::start(Backend::Redis).await;
    let python = litellm::venv_program("python");
    let url = t.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .current_dir(litellm::repo())
            .env("PYTHONPATH", litellm::repo().join("clients/python/src"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("TOLLGATE_TEST_URL", url)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg("clients/python/tests/test_live_tollgate.py")
            .output()
            .expect("run pytest")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("2 passed"), "{report}");
}
