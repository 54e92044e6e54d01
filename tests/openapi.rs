//! `GET /openapi.json`: the document is OpenAPI 3.1 (checked against the 3.1 meta-schema
//! that schemathesis ships), lists exactly the routes the server serves, and a running
//! tollgate, fuzzed against it by schemathesis on both stores, answers no 5xx and only
//! what the document says.
//!
//! schemathesis lives in the virtualenv `scripts/test.sh` makes (`target/pyenv`); set
//! `SCHEMATHESIS` to use another. `TOLLGATE_FUZZ_SEED` picks the seed (default fixed,
//! so a run is reproducible) and `TOLLGATE_FUZZ_EXAMPLES` the examples per operation.

mod common;

use common::{Backend, Tollgate};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Instant;

const KEY: &str = "fuzz-key";

fn pyenv_bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/pyenv/bin")
        .join(name)
}

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| pyenv_bin("schemathesis"));
    assert!(
        path.exists(),
        "{} is missing: scripts/test.sh installs schemathesis into target/pyenv",
        path.display()
    );
    path
}

async fn start(backend: Backend) -> Tollgate {
    Tollgate::start_with(backend, |s| s.api_keys = vec![KEY.to_string()]).await
}

async fn document(t: &Tollgate) -> Value {
    let a = t.get("/openapi.json").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    a.body
}

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_openapi_3_1_and_lists_exactly_the_served_routes() {
    let t = start(Backend::Memory).await;
    let doc = document(&t).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort_unstable();
    assert_eq!(
        documented,
        [
            "/api/governance/model-configs",
            "/api/governance/model-configs/{mc_id}",
            "/health",
            "/metrics",
            "/openapi.json",
            "/ready",
            "/v1/check",
            "/v1/usage",
        ]
    );
    let http = t.client.clone().with_key(KEY);
    for (path, item) in paths {
        let concrete = path.replace("{mc_id}", "no-such-config");
        for method in METHODS {
            let req = http.request(method.to_uppercase().parse().unwrap(), &concrete);
            let a = http.send(req.json(&json!({"model": "m"}))).await;
            match item.get(method) {
                // Served: routing found it (a 404 here is the config's, in the envelope).
                Some(op) => {
                    assert_ne!(a.status, 405, "{method} {path}: {}", a.body);
                    if a.status == 404 {
                        assert!(a.message().contains("not found"), "{method} {path}");
                    }
                    let responses = op["responses"].as_object().expect("responses");
                    assert!(!responses.is_empty(), "{method} {path}");
                    assert!(
                        responses.contains_key(a.status.as_str()),
                        "{method} {path} answered {}, which the document does not list",
                        a.status
                    );
                    let secured = op.get("security") == Some(&json!([{"bearer": []}]));
                    assert_eq!(secured, path.starts_with("/api/"), "{method} {path}");
                }
                None => assert_eq!(a.status, 405, "{method} {path} is not documented"),
            }
        }
    }
    // The management API accepts JSON whatever the Content-Type; the document must not
    // claim more than application/json for the hot path.
    for path in ["/v1/check", "/v1/usage"] {
        let content = &paths[path]["post"]["requestBody"]["content"];
        assert_eq!(content.as_object().unwrap().len(), 1);
        assert!(content.get("application/json").is_some());
        assert!(paths[path]["post"]["responses"].get("415").is_some());
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer",
               "description": "One of the `--api-key` values; required only when any is configured"})
    );
    let params: Vec<&str> = paths["/api/governance/model-configs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        [
            "limit",
            "offset",
            "search",
            "scope",
            "scope_id",
            "provider",
            "from_memory"
        ]
    );
    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.strip_prefix('#').expect("local reference");
        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
    }
    validate_against_meta_schema(&doc);
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// The OpenAPI 3.1 meta-schema (and the JSON Schema 2020-12 one for every component
/// schema), as bundled by schemathesis, checked with its validator (`jsonschema_rs`).
fn validate_against_meta_schema(doc: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let script = r#"
import json, sys, jsonschema_rs
from schemathesis.specs.openapi.definitions import OPENAPI_31
doc = json.load(open(sys.argv[1]))
errors = [str(e) for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(doc)]
for name, schema in doc["components"]["schemas"].items():
    if not jsonschema_rs.meta.is_valid(schema):
        errors.append(f"components.schemas.{name} is not a valid JSON Schema")
print("\n".join(errors))
sys.exit(1 if errors else 0)
"#;
    let out = std::process::Command::new(pyenv_bin("python"))
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output()
        .expect("target/pyenv/bin/python (scripts/test.sh makes it)");
    assert!(
        out.status.success(),
        "the document is not valid OpenAPI 3.1:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Configs that the fuzzed checks match, so answers with limits, 429s and usage
/// settlements are exercised, not only "no config matched".
async fn seed(t: &Tollgate) {
    let t = t.client.clone().with_key(KEY);
    t.create(json!({"model_name": "*", "rate_limit": {
        "request_max_limit": 50, "request_reset_duration": "1h",
        "token_max_limit": 100000, "token_reset_duration": "1m"}}))
        .await;
    t.create(json!({"model_name": "*", "scope": "user", "scope_id": "0",
        "calendar_aligned": true,
        "budgets": [{"max_limit": 1.5, "reset_duration": "1d"},
                    {"max_limit": 10, "reset_duration": "monthly"}]}))
        .await;
}

/// Write operations validate more than a JSON Schema can say (scope_id required unless
/// global, a max needs its duration, zero durations, identity on update, budget ids of
/// the config): a schema-valid body may get a 400 there, and only there.
const CONFIG: &str = r#"
[generation]
database = "none"

[[operations]]
include-operation-id = ["create", "update"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409"]
"#;

async fn fuzz(backend: Backend) {
    let t = start(backend).await;
    seed(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let seed = std::env::var("TOLLGATE_FUZZ_SEED").unwrap_or_else(|_| "20260513".into());
    let examples = std::env::var("TOLLGATE_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".into());
    let started = Instant::now();
    let out = tokio::process::Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .args(["run", &t.client.url("/openapi.json")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
        ])
        .args(["--workers", "2", "--request-timeout", "10"])
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "schemathesis on {backend:?}: {:.1}s\n{}",
        started.elapsed().as_secs_f64(),
        report
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.status.success(),
        "schemathesis found failures on {backend:?} (seed {seed}):\n{report}"
    );
    assert!(
        report.contains("Tested: 10"),
        "all 10 operations fuzzed:\n{report}"
    );
    // The server is still fine afterwards.
    assert_eq!(t.get("/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_on_the_memory_store() {
    fuzz(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_on_redis() {
    fuzz(Backend::Redis).await;
}
