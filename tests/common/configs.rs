//! Helpers of the configs-as-code tests: `tollgate configs …` as a process, configs
//! files written the ways operators and Kubernetes write them, and what a replica holds.
#![allow(dead_code)]

use super::Client;
use serde_json::Value;
use std::path::Path;

pub const CONFIGS: &str = "/api/governance/model-configs";

/// A finished `tollgate configs …`.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Plan lines that start with `action` (`create`, `update`, …).
    pub fn lines(&self, action: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(action))
            .collect()
    }
}

/// Runs `tollgate configs ARGS` (no TOLLGATE_* from the test's environment).
pub async fn configs_cmd(args: &[&str]) -> Ran {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("configs")
        .args(args)
        .env_remove("TOLLGATE_URL")
        .env_remove("TOLLGATE_API_KEY")
        .output()
        .await
        .expect("run tollgate configs");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every config the store holds (the tests keep fewer than 100).
pub async fn stored(c: &Client) -> Vec<Value> {
    let a = c.get(&format!("{CONFIGS}?limit=100")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["model_configs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The stored configs of `model`.
pub async fn of_model(c: &Client, model: &str) -> Vec<Value> {
    stored(c)
        .await
        .into_iter()
        .filter(|v| v["model_name"] == model)
        .collect()
}

/// The sum of the samples of `name` (any labels) in Prometheus text; None if absent.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

pub async fn metrics_text(c: &Client) -> String {
    let resp = reqwest::get(c.url("/metrics")).await.unwrap();
    resp.text().await.unwrap()
}

/// A temp file beside `path`, then a rename over it: the way editors and tools write.
pub fn write_by_rename(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Kubernetes' ConfigMap volume: `dir/NAME` → `..data/NAME`, `..data` → `..<gen>/`, and
/// an update writes a new `..<gen>/` and swaps `..data` atomically (a symlink renamed
/// over the old one).
pub struct ConfigMapDir {
    pub dir: std::path::PathBuf,
    name: String,
    generation: u32,
}

impl ConfigMapDir {
    pub fn new(dir: &Path, name: &str, content: &str) -> Self {
        let mut cm = ConfigMapDir {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            generation: 0,
        };
        cm.publish(content);
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        cm
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.join(&self.name)
    }

    /// Writes a new generation and swaps `..data` to it.
    pub fn publish(&mut self, content: &str) {
        self.generation += 1;
        let generation = format!(
            "..2026_01_01_00_00_{:02}.{}",
            self.generation,
            std::process::id()
        );
        std::fs::create_dir(self.dir.join(&generation)).unwrap();
        std::fs::write(self.dir.join(&generation).join(&self.name), content).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&generation, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}
