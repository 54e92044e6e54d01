//! docker-compose.yml is valid and describes what docs/operations.md promises: Redis with
//! persistence, two tollgate replicas on it, a load balancer in front. There is no
//! Docker engine here, so it is validated (`docker-compose config`), not started.

use std::process::Command;

fn compose_config() -> serde_json::Value {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .env("TOLLGATE_API_KEY", "test-key")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("docker-compose is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "docker-compose config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `config` prints normalized YAML; read it through the YAML module that Debian's
    // docker-compose itself depends on (python3-yaml, under /usr/bin/python3).
    let py = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin.as_ref().unwrap().write_all(&out.stdout).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn compose_file_is_valid_and_complete() {
    let c = compose_config();
    let services = c["services"].as_object().unwrap();
    let redis = &services["redis"];
    let command = redis["command"].to_string();
    assert!(
        command.contains("--appendonly") && command.contains("yes"),
        "Redis persistence on: {command}"
    );
    assert!(
        redis["volumes"].as_array().is_some_and(|v| !v.is_empty()),
        "Redis data on a volume"
    );

    let replicas: Vec<_> = services
        .keys()
        .filter(|k| k.starts_with("tollgate"))
        .collect();
    assert_eq!(replicas.len(), 2, "two tollgate replicas: {replicas:?}");
    for name in replicas {
        let env = &services[name.as_str()]["environment"];
        assert_eq!(
            env["TOLLGATE_REDIS_URL"], "redis://redis:6379",
            "{name} shares the Redis"
        );
        assert_eq!(
            env["TOLLGATE_API_KEY"], "test-key",
            "{name} requires an API key"
        );
        assert!(
            env["TOLLGATE_LISTEN"]
                .as_str()
                .unwrap()
                .starts_with("0.0.0.0:")
        );
    }
    let lb = &services["lb"];
    assert!(
        lb["ports"].to_string().contains("127.0.0.1"),
        "the load balancer is published on loopback only (no key-less exposure by default): {}",
        lb["ports"]
    );
    let nginx =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf")).unwrap();
    assert!(nginx.contains("tollgate-1:8080") && nginx.contains("tollgate-2:8080"));
}

#[test]
fn compose_refuses_to_run_without_an_api_key() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .env_remove("TOLLGATE_API_KEY")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOLLGATE_API_KEY"));
}
