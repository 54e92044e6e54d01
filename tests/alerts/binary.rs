//! The `tollgate` binary's webhook settings: a bad `--alert-webhook` refuses start-up,
//! `--help` documents both settings without their values, and a tollgate with a webhook
//! starts and stops cleanly.

use crate::common::{Process, free_port};
use std::time::{Duration, Instant};

fn tollgate() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// A webhook URL that cannot work stops start-up, from the flag or the variable, and
/// says what is expected; so does a secret without a webhook.
#[test]
fn a_bad_webhook_url_refuses_start_up() {
    let listen = format!("127.0.0.1:{}", free_port());
    for (args, env) in [
        (vec!["--alert-webhook", "ftp://alerts.example.com/x"], None),
        (vec!["--alert-webhook", "alerts.example.com/hook"], None),
        (vec![], Some("http://")),
    ] {
        let mut cmd = tollgate();
        cmd.args(["--listen", &listen]).args(&args);
        if let Some(url) = env {
            cmd.env("TOLLGATE_ALERT_WEBHOOK", url);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} started");
        assert!(
            err.contains("--alert-webhook must be an http:// or https:// URL"),
            "{args:?} {env:?}: {err}"
        );
    }
    let out = tollgate()
        .args(["--listen", &listen, "--alert-webhook-secret", "k"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --alert-webhook"));
}

/// `--help` names both settings and their variables, and never shows their values.
#[test]
fn help_documents_the_webhook_and_hides_its_values() {
    let out = tollgate()
        .arg("--help")
        .env("TOLLGATE_ALERT_WEBHOOK", "https://h/hook?token=tok-in-url")
        .env("TOLLGATE_ALERT_WEBHOOK_SECRET", "very-secret-value")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needed in [
        "--alert-webhook",
        "TOLLGATE_ALERT_WEBHOOK",
        "--alert-webhook-secret",
        "TOLLGATE_ALERT_WEBHOOK_SECRET",
        "X-Tollgate-Signature",
    ] {
        assert!(help.contains(needed), "{needed}:\n{help}");
    }
    assert!(
        !help.contains("tok-in-url") && !help.contains("very-secret-value"),
        "{help}"
    );
}

/// The binary with a webhook (down) starts, logs where events go without the URL's
/// path, and stops promptly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tollgate_with_a_webhook_starts_and_stops_cleanly() {
    let url = format!("http://127.0.0.1:{}/hook?token=tok-in-url", free_port());
    let mut p = Process::spawn(
        &["--alert-webhook", &url],
        &[("TOLLGATE_ALERT_WEBHOOK_SECRET", "s")],
    )
    .await;
    let err = p.stderr();
    assert!(
        err.contains("alert webhook") && err.contains("signed=true"),
        "{err}"
    );
    assert!(
        !err.contains("tok-in-url"),
        "the URL's query stays out of logs: {err}"
    );
    p.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}: {}", p.stderr());
}
