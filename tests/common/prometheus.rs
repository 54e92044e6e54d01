//! A real Prometheus (Debian's `prometheus` package) of the test's own: its own config,
//! port and data directory, killed when dropped. Never a mock, never a service's default
//! port or data.

#![allow(dead_code)]
use crate::common::free_port;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "install Debian's prometheus package, which provides prometheus and \
promtool (scripts/test.sh does: apt-get install prometheus), or point PROMETHEUS / PROMTOOL at them";

/// `name` from the variable `var`, else from the PATH; panics with the install hint.
fn binary(var: &str, name: &str) -> String {
    let bin = std::env::var(var).unwrap_or_else(|_| name.to_string());
    match Command::new(&bin).arg("--version").output() {
        Ok(out) if out.status.success() => bin,
        _ => panic!("{name} not found ({bin}): {INSTALL_HINT}"),
    }
}

pub fn promtool() -> String {
    binary("PROMTOOL", "promtool")
}

/// The shipped rule file.
pub fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/tollgate-rules.yml")
}

pub struct Prometheus {
    pub base: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Prometheus {
    /// Scrapes `targets` (host:port) as job `tollgate` every second and evaluates the
    /// shipped rules every second.
    pub async fn start(targets: &[String]) -> Self {
        let bin = binary("PROMETHEUS", "prometheus");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files: ['{}']\n\
             scrape_configs:\n  - job_name: tollgate\n    static_configs:\n      - targets: [{}]\n",
            rules_file().display(),
            targets.join(", ")
        );
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let config_file = dir.path().join("prometheus.yml");
            std::fs::write(&config_file, &config).unwrap();
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new(&bin)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {bin}: {e}; {INSTALL_HINT}"));
            let mut p = Prometheus {
                base: format!("http://127.0.0.1:{port}"),
                child,
                dir,
                http: reqwest::Client::new(),
            };
            if p.wait_ready().await {
                return p;
            }
            assert!(
                p.log().contains("address already in use"),
                "prometheus did not start: {}",
                p.log()
            );
        }
        panic!("no free port for prometheus after 5 attempts");
    }

    /// True once `/-/ready` answers 200; false if the process exited first.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(r) = self.http.get(format!("{}/-/ready", self.base)).send().await
                && r.status() == 200
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>?<query>`: the whole answer (`status`, `data` or `error`).
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.base), query)
            .expect("a valid URL");
        self.http
            .get(url)
            .send()
            .await
            .expect("prometheus answers")
            .json()
            .await
            .expect("prometheus answers JSON")
    }

    /// An instant query: the whole answer.
    pub async fn query(&self, expr: &str) -> Value {
        self.api("query", &[("query", expr)]).await
    }

    /// The samples of an instant query that must succeed: (labels, value).
    pub async fn samples(&self, expr: &str) -> Vec<(Value, f64)> {
        let a = self.query(expr).await;
        assert_eq!(a["status"], "success", "{expr}: {a}");
        let result = &a["data"]["result"];
        match a["data"]["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["metric"].clone(), sample_value(&s["value"])))
                .collect(),
            Some("scalar") => vec![(Value::Null, sample_value(result))],
            other => panic!("{expr}: unexpected result type {other:?}: {a}"),
        }
    }
}

/// `[time, "value"]` → value (`NaN`, `+Inf` included).
fn sample_value(v: &Value) -> f64 {
    let s = v[1].as_str().expect("a sample value");
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap_or(f64::NAN),
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
