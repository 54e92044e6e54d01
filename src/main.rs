//! Parses the settings, builds the runtime, and hands over to `tollgate::run`.

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// glibc malloc was ~20% of tollgate's CPU per check under load (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let settings = tollgate::Settings::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = settings.worker_threads {
        runtime.worker_threads(n as usize);
    }
    match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(serve(settings)),
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: tollgate::Settings) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match tollgate::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}
