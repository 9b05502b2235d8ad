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

/// jemalloc's options (it reads them at its first allocation, before `main`; `MALLOC_CONF`
/// in the environment still overrides them). One arena instead of four per CPU: memory a
/// thread frees stays in its arena for the next allocation there, and with eight arenas on
/// two cores the outbox relay's rounds (allocated on whichever worker runs them, freed on
/// another) kept ~20–25 MiB more resident under `hot-item`; one arena cost no throughput
/// (A/B in docs/benchmarks.md, "2026-12-04, night"). Threads still allocate small objects
/// from their own caches, so they seldom contend for the arena.
// SAFETY: a NUL-terminated string that jemalloc only reads; `malloc_conf` is the name the
// unprefixed build looks up (`const char *malloc_conf`, which a `&[u8; N]` is laid out as).
// Linux only: elsewhere (macOS, Android, Windows) tikv-jemalloc builds with its `_rjem_`
// prefix and would not read this name.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: &[u8; 10] = b"narenas:1\0";

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
