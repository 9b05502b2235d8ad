//! `trueline`: see `trueline --help`.

use clap::Parser;

// jemalloc, for Rust and for SQLite (its `malloc` replaces glibc's in the whole process).
// A/B on this VM, alternating binaries, 64 clients: `hot-item` 18.8k/19.3k → 21.8k/21.6k
// req/s, `spread` +4–6 %, `events-append` +25 % in the full run, peak RSS under `hot-item`
// ~10 MiB lower, idle RSS 1–3 MiB higher (docs/benchmarks.md, 2026-12-04 evening).
// mimalloc was tried before and dropped: mimalloc 3 doubled the idle RSS (48 MB against
// 24 MB; the budget is 30 MB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
