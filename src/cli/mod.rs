//! The command line: with no subcommand, the server (`Settings`, unchanged); with
//! `configs validate|export|apply`, the configs-as-code tools, which talk to a running
//! fleet through its management API.
//!
//! Exit codes: 0 done; 1 the file (or a flag) is invalid and nothing was applied; 2 the
//! server could not be read or written (the output says what was applied, if anything).

mod apply;
mod client;
mod export;
mod validate;

use crate::Settings;
use crate::configs_file::Format;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

pub const EXIT_OK: u8 = 0;
pub const EXIT_INVALID: u8 = 1;
pub const EXIT_SERVER: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Distributed rate-limit and budget sidecar for LLM gateways",
    long_about = "Distributed rate-limit and budget sidecar for LLM gateways.\n\n\
        Without a subcommand, runs the sidecar. Without --redis-url, tollgate runs on an \
        embedded in-memory store (one instance, counters not shared). With --redis-url, \
        every tollgate sharing that Redis enforces one set of limits.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configs as code: validate a configs file, export a fleet's configs, apply a file.
    #[command(subcommand)]
    Configs(ConfigsCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigsCommand {
    /// Check a configs file offline (YAML or JSON by extension; a `configs:` list of
    /// create bodies). Prints every error with its place; exit 1 if there is any.
    Validate {
        /// The configs file (*.yaml, *.yml or *.json).
        file: PathBuf,
    },
    /// Print the configs file of a running fleet (read through its management API).
    /// Applying it back changes nothing.
    Export {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Yaml)]
        format: OutputFormat,
    },
    /// Make a running fleet's configs match a file, through its management API. Prints
    /// the plan (create, update, delete, unchanged: one line per config), then applies
    /// it: updates keep the configs' ids and counters. An invalid file applies nothing
    /// (exit 1); a partly failed apply says what was and was not applied (exit 2).
    Apply {
        /// The configs file (*.yaml, *.yml or *.json).
        file: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Also delete the configs the file does not name.
        #[arg(long)]
        prune: bool,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The fleet to talk to.
#[derive(Debug, Args)]
pub struct Target {
    /// The URL of any tollgate of the fleet (its --listen address), e.g.
    /// http://127.0.0.1:8080.
    #[arg(long, env = "TOLLGATE_URL")]
    pub url: String,
    /// A management API key (one of the server's --api-key values). From
    /// TOLLGATE_API_KEY, the first key if it lists several.
    #[arg(long = "api-key", env = "TOLLGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl Target {
    fn key(&self) -> Option<String> {
        self.api_key
            .as_deref()
            .and_then(|k| k.split(',').map(str::trim).find(|k| !k.is_empty()))
            .map(str::to_string)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

/// Runs a subcommand to its exit code (on a runtime of its own: the server's is not
/// built for these).
pub fn run(command: Command) -> ExitCode {
    let Command::Configs(command) = command;
    let code = match command {
        ConfigsCommand::Validate { file } => validate::validate(&file),
        ConfigsCommand::Export { target, format } => {
            let format = match format {
                OutputFormat::Yaml => Format::Yaml,
                OutputFormat::Json => Format::Json,
            };
            with_api(
                &target,
                |api| async move { export::export(&api, format).await },
            )
        }
        ConfigsCommand::Apply {
            file,
            target,
            prune,
            dry_run,
        } => with_api(&target, |api| async move {
            apply::apply(&api, &file, prune, dry_run).await
        }),
    };
    ExitCode::from(code)
}

fn with_api<F, Fut>(target: &Target, f: F) -> u8
where
    F: FnOnce(client::Api) -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    let api = match client::Api::new(&target.url, target.key()) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return EXIT_INVALID;
        }
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f(api)),
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            EXIT_SERVER
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_is_the_server_with_its_flags() {
        let cli = Cli::try_parse_from(["tollgate", "--listen", "127.0.0.1:9"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.settings.listen.port(), 9);
    }

    #[test]
    fn subcommands_parse_and_refuse_server_flags() {
        let cli = Cli::try_parse_from([
            "tollgate",
            "configs",
            "apply",
            "f.yaml",
            "--url",
            "http://x",
            "--prune",
            "--dry-run",
            "--api-key",
            "k",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Configs(ConfigsCommand::Apply {
                prune: true,
                dry_run: true,
                target,
                ..
            })) => assert_eq!(target.key().as_deref(), Some("k")),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["tollgate", "configs", "validate"]).is_err());
        assert!(
            Cli::try_parse_from([
                "tollgate",
                "--listen",
                "127.0.0.1:9",
                "configs",
                "validate",
                "f"
            ])
            .is_err()
        );
    }
}
