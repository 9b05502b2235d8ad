//! `trueline`: see `trueline --help`.

use clap::Parser;

/// mimalloc instead of glibc's malloc: under load the server allocates and frees small
/// buffers on two runtime threads at once, and glibc's malloc/free (arena locks,
/// consolidation) took ~12 % of the server's CPU (perf, `events-append` at 64 clients).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = trueline::cli::Cli::parse();
    let result = trueline::cli::run(cli).await;
    // Log lines are written in batches: the last ones before exiting.
    trueline::telemetry::flush_logs();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
