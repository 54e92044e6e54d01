//! `tollgate configs validate | export | apply`, as processes against a running tollgate
//! on both stores: every error reported with its place, plans printed and applied,
//! idempotence, updates that keep usage, prune, dry runs, export round trips, and a
//! partly failed apply that says what it did.

mod common;

use common::configs::{Ran, configs_cmd, of_model, stored};
use common::{Backend, Client, Tollgate};
use serde_json::{Value, json};
use std::path::Path;

const KEY: &str = "apply-key";

const V1: &str = r#"
configs:
  - model_name: gpt-4o
    provider: openai
    scope: virtual_key
    scope_id: vk-1
    rate_limit: {request_max_limit: 5, request_reset_duration: 1h}
  - model_name: "*"
    scope: user
    scope_id: u-1
    budgets: [{max_limit: 10, reset_duration: monthly}]
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn apply(t: &Tollgate, file: &str, more: &[&str]) -> Ran {
    let mut args = vec!["apply", file, "--url", &t.base, "--api-key", KEY];
    args.extend_from_slice(more);
    configs_cmd(&args).await
}

/// (model_name, id, updated_at) of every stored config, sorted.
async fn ids_and_times(c: &Client) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = stored(c)
        .await
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("model_name"), s("id"), s("updated_at"))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_and_flag_has_help() {
    let top = configs_cmd(&["--help"]).await;
    for sub in ["validate", "export", "apply"] {
        assert!(top.stdout.contains(sub), "{top:?}");
    }
    let apply = configs_cmd(&["apply", "--help"]).await;
    for flag in [
        "--url",
        "TOLLGATE_URL",
        "--api-key",
        "TOLLGATE_API_KEY",
        "--prune",
        "--dry-run",
    ] {
        assert!(
            apply.stdout.contains(flag),
            "apply --help lacks {flag}: {apply:?}"
        );
    }
    let export = configs_cmd(&["export", "--help"]).await;
    assert!(
        export.stdout.contains("--format") && export.stdout.contains("json"),
        "{export:?}"
    );
    let missing = configs_cmd(&["apply", "f.yaml"]).await;
    assert!(
        missing.code != 0 && missing.stderr.contains("--url"),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_accepts_a_valid_file_and_reports_every_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", V1);
    let ran = configs_cmd(&["validate", &good]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("valid, 2 configs"), "{ran:?}");
    let json = write(
        dir.path(),
        "good.json",
        r#"{"configs": [{"model_name": "m"}]}"#,
    );
    assert_eq!(configs_cmd(&["validate", &json]).await.code, 0);

    let bad = write(
        dir.path(),
        "bad.yml",
        r#"
configs:
  - {model_name: gpt-4o, scope: virtual_key, scope_id: vk-1}
  - model_name: x
    budgets: [{max_limit: 1, reset_duration: 5x}]
  - {model_name: m, scope: user}
  - {model_name: gpt-4o, scope: virtual_key, scope_id: vk-1, calendar_aligned: true}
  - {model_name: y, rate_limit: {token_max_limit: 0, token_reset_duration: 1m}}
"#,
    );
    let ran = configs_cmd(&["validate", &bad]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    let errors: Vec<&str> = ran.stderr.lines().collect();
    let has = |prefix: &str| {
        errors
            .iter()
            .any(|l| l.starts_with(&format!("{bad}: {prefix}")))
    };
    assert!(
        has("configs[1] (global x): budgets[0].reset_duration"),
        "{errors:#?}"
    );
    assert!(
        has("configs[2] (user m): scope_id is required"),
        "{errors:#?}"
    );
    assert!(
        has(
            "configs[3] (virtual_key vk-1 gpt-4o): same scope, scope_id, model_name and provider as configs[0]"
        ),
        "{errors:#?}"
    );
    assert!(
        has("configs[4] (global y): rate_limit.token_max_limit"),
        "{errors:#?}"
    );
    assert!(ran.stderr.contains("invalid, 4 errors"), "{errors:#?}");

    let syntax = write(
        dir.path(),
        "syntax.yaml",
        "configs:\n  - model_name: a\n   oops: [\n",
    );
    let ran = configs_cmd(&["validate", &syntax]).await;
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr.contains("invalid YAML") && ran.stderr.contains("line 3"),
        "{ran:?}"
    );
    let syntax = write(
        dir.path(),
        "syntax.json",
        "{\"configs\": [\n  {\"model_name\": }]}",
    );
    let ran = configs_cmd(&["validate", &syntax]).await;
    assert!(
        ran.code == 1 && ran.stderr.contains("line 2 column"),
        "{ran:?}"
    );
    let ran = configs_cmd(&["validate", &write(dir.path(), "c.toml", "")]).await;
    assert!(ran.code == 1 && ran.stderr.contains("*.yaml"), "{ran:?}");
    let ran = configs_cmd(&["validate", "/no/such/configs.yaml"]).await;
    assert!(
        ran.code == 1 && ran.stderr.contains("cannot read"),
        "{ran:?}"
    );
}

async fn apply_plans_and_is_idempotent(backend: Backend) {
    let t = Tollgate::start_with(backend, |s| s.api_keys = vec![KEY.into()]).await;
    let api = t.client.clone().with_key(KEY);
    api.create(json!({"model_name": "unnamed"})).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "configs.yaml", V1);

    let ran = apply(&t, &file, &["--dry-run"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        ran.lines("create"),
        [
            "create    virtual_key vk-1 openai/gpt-4o",
            "create    user u-1 *"
        ]
    );
    assert!(ran.stdout.contains("dry run: nothing applied"));
    assert_eq!(stored(&api).await.len(), 1, "a dry run changes nothing");

    let ran = apply(&t, &file, &[]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(ran.lines("create").len(), 2, "{ran:?}");
    assert!(
        ran.stdout
            .contains("1 configs the file does not name are kept"),
        "{ran:?}"
    );
    assert_eq!(stored(&api).await.len(), 3);
    let before = ids_and_times(&api).await;

    let ran = apply(&t, &file, &[]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(ran.lines("unchanged").len(), 2, "{ran:?}");
    assert!(ran.lines("create").is_empty() && ran.lines("update").is_empty());
    assert_eq!(
        ids_and_times(&api).await,
        before,
        "a second apply writes nothing"
    );

    // An update keeps the config's id and its usage.
    let check = json!({"model": "gpt-4o", "provider": "openai", "virtual_key": "vk-1"});
    assert_eq!(t.check(check.clone()).await.status, 200);
    std::fs::write(
        &file,
        V1.replace("request_max_limit: 5", "request_max_limit: 50"),
    )
    .unwrap();
    let ran = apply(&t, &file, &[]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        ran.lines("update"),
        ["update    virtual_key vk-1 openai/gpt-4o"]
    );
    assert_eq!(ran.lines("unchanged"), ["unchanged user u-1 *"]);
    let updated = &of_model(&api, "gpt-4o").await[0];
    let old_id = &before.iter().find(|b| b.0 == "gpt-4o").unwrap().1;
    assert_eq!(updated["id"], old_id.as_str(), "updated in place");
    assert_eq!(updated["rate_limit"]["request_max_limit"], 50);
    assert_eq!(
        updated["rate_limit"]["request_current_usage"], 1,
        "usage kept"
    );

    // Export, then apply what it printed: nothing to do, in both formats.
    for (format, name) in [("yaml", "exported.yaml"), ("json", "exported.json")] {
        let ran = configs_cmd(&[
            "export",
            "--url",
            &t.base,
            "--api-key",
            KEY,
            "--format",
            format,
        ])
        .await;
        assert_eq!(ran.code, 0, "{ran:?}");
        let exported = write(dir.path(), name, &ran.stdout);
        let again = apply(&t, &exported, &[]).await;
        assert_eq!(again.code, 0, "{again:?}");
        assert_eq!(
            again.lines("unchanged").len(),
            3,
            "{format}: {}\n{again:?}",
            ran.stdout
        );
    }

    // An invalid file applies nothing.
    let state = ids_and_times(&api).await;
    let bad = write(dir.path(), "bad.yaml", &V1.replace("monthly", "sometimes"));
    let ran = apply(&t, &bad, &["--prune"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.stderr
            .contains("configs[1] (user u-1 *): budgets[0].reset_duration"),
        "{ran:?}"
    );
    assert!(ran.stderr.contains("nothing applied"), "{ran:?}");
    assert_eq!(ids_and_times(&api).await, state);

    // --prune deletes what the file does not name.
    let ran = apply(&t, &file, &["--prune"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(ran.lines("delete"), ["delete    global unnamed"]);
    assert_eq!(stored(&api).await.len(), 2);
    assert!(of_model(&api, "unnamed").await.is_empty());
}

/// One change refused by the server (a config a configs file manages) and one made:
/// exit 2, and the output says which is which.
async fn a_partly_failed_apply_says_what_it_applied(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let managed = write(
        dir.path(),
        "managed.yaml",
        "configs:\n  - {model_name: owned}\n",
    );
    let t = Tollgate::start_with(backend, |s| {
        s.api_keys = vec![KEY.into()];
        s.configs_file.path = Some(managed.clone().into());
    })
    .await;
    let api = t.client.clone().with_key(KEY);
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || async {
            of_model(&api, "owned").await.len() == 1
        })
        .await
    );
    let file = write(
        dir.path(),
        "apply.yaml",
        "configs:\n  - {model_name: owned, rate_limit: {request_max_limit: 1, request_reset_duration: 1m}}\n  - {model_name: fresh}\n",
    );
    let ran = apply(&t, &file, &[]).await;
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stdout.contains("applied   create    global fresh"),
        "{ran:?}"
    );
    assert!(
        ran.stderr.contains("FAILED    update    global owned: HTTP 409: model config global owned is managed by the configs file"),
        "{ran:?}"
    );
    assert!(
        ran.stderr.contains(
            "partly applied: 1 of 2 changes applied; not applied:\n  update    global owned"
        ),
        "{ran:?}"
    );
    assert_eq!(of_model(&api, "fresh").await.len(), 1);
    let owned: &Value = &of_model(&api, "owned").await[0];
    assert!(
        owned["rate_limit"].is_null(),
        "the refused update changed nothing"
    );
}

on_every_store!(
    apply_plans_and_is_idempotent,
    a_partly_failed_apply_says_what_it_applied
);
