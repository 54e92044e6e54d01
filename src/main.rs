//! Parses the command line: a `configs` subcommand runs to its exit code; otherwise it
//! builds the server's runtime and hands over to `tollgate::run`.

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// glibc malloc was ~20% of tollgate's CPU per check under load (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = tollgate::cli::Cli::parse();
    if let Some(command) = cli.command {
        return tollgate::cli::run(command);
    }
    let settings = cli.settings;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(worker_threads(settings.worker_threads));
    match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(serve(settings)),
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A sidecar shares its host with the gateway (and often Redis): by default leave one
/// CPU to them. On a 2-core box one worker served 17% more checks/s than two
/// (docs/benchmarks.md).
fn worker_threads(configured: Option<u16>) -> usize {
    configured.map_or_else(
        || {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            cpus.saturating_sub(1).max(1)
        },
        usize::from,
    )
}

async fn serve(settings: tollgate::Settings) -> ExitCode {
    // Logs go to stderr (stdout stays free for whatever wraps the process); colours only
    // on a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match tollgate::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}
