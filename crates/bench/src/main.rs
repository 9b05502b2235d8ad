//! `trueline-bench`: see `trueline-bench --help` and docs/benchmarks.md.
//!
//! Exit codes: 0 when every end-of-run check passed, 1 when a check failed (the server's
//! state differs from what it acknowledged, it answered 5xx, or more operations failed than
//! `--max-error-rate` allows), 2 on any other error.

use clap::Parser;
use std::process::ExitCode;
use trueline_bench::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(cmd) => trueline_bench::run::run_command(cmd).await,
            Command::Sweep(cmd) => trueline_bench::run::sweep_command(cmd).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: the end-of-run checks failed (see `verified` above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
