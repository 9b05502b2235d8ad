//! `trueline`: see `trueline --help`.

use clap::Parser;

// glibc's malloc, not mimalloc: mimalloc 3 doubled the idle RSS (48 MB against 24 MB; the
// performance issue's budget is 30 MB) and kept ~20 MiB more under load, while its CPU gain
// no longer showed once log lines were batched (events-append at 64 clients, alternating
// binaries: 27.1k/s glibc against 26.9k/s mimalloc, medians of 3; docs/benchmarks.md).

fn main() -> std::process::ExitCode {
    let cli = trueline::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(trueline::cli::run(cli));
    // Log lines are written in batches: the last ones once the runtime (and whatever its
    // tasks and threads still logged while stopping) is gone. Bounded: a blocking task stuck
    // on a hung disk must not keep the process (its signal handlers swallow SIGTERM now).
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    trueline::telemetry::flush_logs();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
