//! The server's `--configs-file` flags (flattened into `Settings`).

use super::format::Format;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Args)]
pub struct ConfigsFileSettings {
    /// A configs file (YAML or JSON, by extension: a `configs:` list of create bodies)
    /// that is the source of truth for the model configs it names. Read at start and
    /// every 500 ms (by content hash, so renames and Kubernetes ConfigMap symlink swaps
    /// count), then the store is reconciled to it: missing configs created, changed ones
    /// updated in place (counters kept). Management-API writes to the configs it names
    /// are refused (409). An invalid file changes nothing: its errors are logged and
    /// tollgate_configs_file_ok is 0 until a valid one.
    #[arg(long = "configs-file", env = "TOLLGATE_CONFIGS_FILE")]
    pub path: Option<PathBuf>,

    /// With --configs-file: also delete the configs the file does not name (the file is
    /// then the whole set, and this replica refuses every management-API write). Without
    /// it, configs the file stops naming stay, writable through the API again.
    /// (The variable takes true/false, 1/0, yes/no, on/off.)
    #[arg(long = "configs-file-prune", env = "TOLLGATE_CONFIGS_FILE_PRUNE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub prune: bool,
}

impl ConfigsFileSettings {
    /// Refuses a file of no known format, and prune without a file.
    pub fn validate(&self) -> Result<(), String> {
        match &self.path {
            Some(path) => Format::of(path).map(|_| ()).map_err(|e| format!("--configs-file {e}")),
            None if self.prune => Err(
                "--configs-file-prune needs --configs-file (the file whose configs are the whole set)"
                    .into(),
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Settings;
    use clap::Parser;

    fn validate(args: &[&str]) -> Result<(), String> {
        let mut all = vec!["tollgate"];
        all.extend_from_slice(args);
        Settings::try_parse_from(all).unwrap().validate()
    }

    #[test]
    fn a_configs_file_needs_a_known_format_and_prune_needs_a_file() {
        assert!(validate(&[]).is_ok());
        assert!(validate(&["--configs-file", "/etc/tollgate/configs.yaml"]).is_ok());
        assert!(validate(&["--configs-file", "c.json", "--configs-file-prune"]).is_ok());
        let e = validate(&["--configs-file", "configs.toml"]).unwrap_err();
        assert!(e.contains("--configs-file") && e.contains("*.yaml"), "{e}");
        let e = validate(&["--configs-file-prune"]).unwrap_err();
        assert!(e.contains("needs --configs-file"), "{e}");
    }
}
