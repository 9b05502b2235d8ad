//! One run (sign up, set up, drive, sample, verify, report) and the sweep over concurrency
//! levels. Progress goes to stderr; the tables go to stdout.

use crate::api::Api;
use crate::cli::{CommonArgs, RunCmd, SweepCmd, Workload};
use crate::driver::{DriveConfig, drive};
use crate::procfs::sample_window;
use crate::report::{
    Parameters, Results, RunReport, RunSummary, SweepPoint, SweepReport, Target, machine,
    now_rfc3339, redact_url, render_run, render_sweep,
};
use crate::server::{SpawnedServer, default_server_bin};
use crate::stats::error_rate;
use crate::verify::{Verification, check_error_rate};
use crate::workloads::{Fixture, Params, Session};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub fn tool_name() -> String {
    format!("trueline-bench {}", env!("CARGO_PKG_VERSION"))
}

/// Where a run sends its requests and whose process it samples.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub server_pid: Option<u32>,
    pub target: Target,
}

fn parameters(workload: Workload, clients: usize, common: &CommonArgs, seed: u64) -> Parameters {
    let mode = match common.rate {
        Some(rate) => format!("open loop at {rate}/s"),
        None => "closed loop".into(),
    };
    let items = match workload {
        Workload::Spread => Some(
            common
                .items
                .unwrap_or(crate::workloads::SPREAD_ITEMS_DEFAULT),
        ),
        Workload::Mixed => Some(
            common
                .items
                .unwrap_or(crate::workloads::MIXED_ITEMS_DEFAULT),
        ),
        Workload::HotItem => Some(1),
        _ => None,
    };
    Parameters {
        clients,
        mode,
        duration_s: common.duration.as_secs_f64(),
        warmup_s: common.warmup.as_secs_f64(),
        rate_per_s: common.rate,
        max_in_flight: common.max_in_flight,
        initial_qty: common.initial_qty,
        max_delta: common.max_delta,
        items,
        batch: common.batch,
        event_bytes: common.event_bytes,
        populate: common.populate,
        streams: common.streams,
        invites: common.invites,
        questions: common.questions,
        token_per_client: common.token_per_client,
        max_error_rate: common.max_error_rate,
        seed,
    }
}

/// One complete run against `endpoint`.
pub async fn run_once(
    workload: Workload,
    clients: usize,
    common: &CommonArgs,
    endpoint: &Endpoint,
    seed: u64,
) -> anyhow::Result<RunReport> {
    let api = Api::new(&endpoint.url, common.timeout)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    eprintln!(
        "[{}] signing up a fresh account (run {run_id})",
        workload.name()
    );
    let session = Arc::new(Session::sign_up(api, run_id, clients, common.token_per_client).await?);
    let params = Params {
        workload,
        clients,
        initial_qty: common.initial_qty,
        max_delta: common.max_delta,
        items: common.items,
        batch: common.batch,
        event_bytes: common.event_bytes,
        populate: common.populate,
        streams: common.streams,
        invites: common.invites,
        questions: common.questions,
        token_per_client: common.token_per_client,
        verify_by_id_max: common.verify_by_id_max,
        seed,
    };
    eprintln!("[{}] setting up (untimed)", workload.name());
    let setup_started = Instant::now();
    let fixture = Arc::new(Fixture::setup(&session, &params).await?);
    eprintln!(
        "[{}] set up in {:.1} s; running {:.1} s warm-up + {:.1} s with {clients} client(s){}",
        workload.name(),
        setup_started.elapsed().as_secs_f64(),
        common.warmup.as_secs_f64(),
        common.duration.as_secs_f64(),
        common
            .rate
            .map(|r| format!(" at {r}/s (open loop)"))
            .unwrap_or_default()
    );
    let config = DriveConfig {
        clients,
        warmup: common.warmup,
        duration: common.duration,
        rate: common.rate,
        max_in_flight: common.max_in_flight,
        seed,
        drain_timeout: common.timeout + Duration::from_secs(5),
    };
    let from = Instant::now() + common.warmup;
    let until = from + common.duration;
    // Dropped when the drive returns: the samplers stop then, even before `until`.
    let (drive_done, stop) = tokio::sync::watch::channel(());
    let server_sampler = endpoint
        .server_pid
        .map(|pid| tokio::spawn(sample_window(pid, from, until, stop.clone())));
    let client_sampler = tokio::spawn(sample_window(std::process::id(), from, until, stop));
    let outcome = drive(fixture.clone(), session.clone(), &config).await;
    drop(drive_done);
    let outcome = outcome?;
    let server = match server_sampler {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    let client = client_sampler.await.ok().flatten();
    eprintln!("[{}] verifying", workload.name());
    let recorded = outcome.recorded;
    let error_rate = error_rate(&recorded);
    let answers = recorded
        .status_counts
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect::<Vec<_>>()
        .join("  ");
    let mut checks = vec![check_error_rate(
        recorded.failed,
        recorded.operations + recorded.refused + recorded.failed,
        common.max_error_rate,
        &answers,
    )];
    checks.extend(
        fixture
            .verify(&session, &recorded.all_status_counts)
            .await
            .checks,
    );
    let verification = Verification::new(checks);
    let measured_s = outcome.measured.as_secs_f64();
    Ok(RunReport {
        tool: tool_name(),
        date: now_rfc3339(),
        workload: workload.name().to_owned(),
        parameters: parameters(workload, clients, common, seed),
        target: endpoint.target.clone(),
        machine: machine(),
        results: Results {
            measured_s,
            operations: recorded.operations,
            throughput_per_s: recorded.operations as f64 / measured_s,
            refused_operations: recorded.refused,
            failed_operations: recorded.failed,
            error_rate,
            latency_us: recorded.latency,
            per_request_us: recorded.per_request,
            status_counts: recorded.status_counts,
            code_counts: recorded.code_counts,
            open_loop: outcome.open_loop,
            server,
            client,
            exhausted: outcome.exhausted,
            notes: fixture.notes(),
            timeline: recorded.timeline,
        },
        verification,
    })
}

/// Runs `f` against a fresh spawned server, or against `--url`.
async fn with_endpoint<T>(
    common: &CommonArgs,
    f: impl AsyncFnOnce(&Endpoint) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if common.spawn {
        if let Some(command) = &common.before_each_run {
            run_hook(command)?;
        }
        let bin = common.server_bin.clone().unwrap_or_else(default_server_bin);
        let server = SpawnedServer::start(
            &bin,
            common.database_url.as_deref(),
            common.server_log_level.as_deref(),
        )
        .await?;
        eprintln!(
            "started {} at {} (pid {})",
            bin.display(),
            server.address,
            server.pid
        );
        let endpoint = Endpoint {
            url: server.address.clone(),
            server_pid: common.server_pid.or(Some(server.pid)),
            target: Target {
                url: server.address.clone(),
                spawned: true,
                database: match &common.database_url {
                    Some(url) => redact_url(url),
                    None => "sqlite (temporary data directory)".into(),
                },
            },
        };
        let result = f(&endpoint).await;
        server.stop().await?;
        result
    } else {
        let url = common.url.clone().context("--url or --spawn is required")?;
        let endpoint = Endpoint {
            url: url.clone(),
            server_pid: common.server_pid,
            target: Target {
                url,
                spawned: false,
                database: "as configured on the server".into(),
            },
        };
        f(&endpoint).await
    }
}

/// `--before-each-run`: `sh -c COMMAND`, which must succeed. Blocking is fine here: no
/// server runs and nothing is measured.
fn run_hook(command: &str) -> anyhow::Result<()> {
    eprintln!("running --before-each-run: {command}");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("starting --before-each-run `{command}`"))?;
    anyhow::ensure!(
        status.success(),
        "--before-each-run `{command}` failed ({status})"
    );
    Ok(())
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn seed_of(common: &CommonArgs) -> u64 {
    common.seed.unwrap_or_else(|| fastrand::u64(..))
}

/// `trueline-bench run`: returns whether the checks passed.
pub async fn run_command(cmd: RunCmd) -> anyhow::Result<bool> {
    let seed = seed_of(&cmd.common);
    let report = with_endpoint(&cmd.common, async |endpoint: &Endpoint| {
        run_once(cmd.workload, cmd.clients, &cmd.common, endpoint, seed).await
    })
    .await?;
    print!("{}", render_run(&report));
    if let Some(path) = &cmd.common.json {
        write_json(path, &report)?;
    }
    if let Some(dir) = &cmd.common.chart_dir {
        for file in crate::chart::run_charts(dir, &report)? {
            eprintln!("wrote {}", file.display());
        }
    }
    Ok(report.verification.passed)
}

/// `trueline-bench sweep`: every level `--runs` times; returns whether every check passed.
pub async fn sweep_command(cmd: SweepCmd) -> anyhow::Result<bool> {
    anyhow::ensure!(
        !cmd.clients.is_empty(),
        "--clients needs at least one level"
    );
    anyhow::ensure!(cmd.runs >= 1, "--runs must be at least 1");
    if cmd.runs < 3 {
        eprintln!("note: fewer than 3 runs per level: the medians are not robust");
    }
    let base_seed = seed_of(&cmd.common);
    let mut points = Vec::new();
    let mut reports = Vec::new();
    for &clients in &cmd.clients {
        let mut summaries = Vec::new();
        for run in 0..cmd.runs {
            let seed = base_seed.wrapping_add((reports.len() as u64) << 32);
            let report = with_endpoint(&cmd.common, async |endpoint: &Endpoint| {
                run_once(cmd.workload, clients, &cmd.common, endpoint, seed).await
            })
            .await?;
            eprintln!(
                "clients {clients:>4} run {}/{}: {:.1} ops/s, p99 {:.2} ms, {:.2} % failed, {}",
                run + 1,
                cmd.runs,
                report.results.throughput_per_s,
                report.results.latency_us.p99_us as f64 / 1000.0,
                report.results.error_rate * 100.0,
                if report.verification.passed {
                    "verified"
                } else {
                    "VERIFICATION FAILED"
                }
            );
            if !report.verification.passed {
                eprint!("{}", render_run(&report));
            }
            summaries.push(RunSummary::of(&report));
            reports.push(report);
        }
        points.push(SweepPoint::new(clients, summaries));
    }
    let first = reports.first().context("no run completed")?;
    let sweep = SweepReport {
        tool: tool_name(),
        date: now_rfc3339(),
        workload: cmd.workload.name().to_owned(),
        runs_per_level: cmd.runs,
        parameters: first.parameters.clone(),
        target: first.target.clone(),
        machine: first.machine.clone(),
        points,
        run_reports: reports,
    };
    print!("{}", render_sweep(&sweep));
    if let Some(path) = &cmd.common.json {
        write_json(path, &sweep)?;
    }
    if let Some(dir) = &cmd.common.chart_dir {
        for file in crate::chart::sweep_charts(dir, &sweep)? {
            eprintln!("wrote {}", file.display());
        }
    }
    Ok(sweep.points.iter().all(|p| p.median.verified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_before_each_run_command_stops_the_run() {
        assert!(run_hook("true").is_ok());
        let e = run_hook("exit 3").unwrap_err();
        assert!(
            format!("{e}").contains("--before-each-run `exit 3` failed"),
            "{e}"
        );
    }
}
