//! `sqlite-baseline`: the bare SQLite ceiling that `hot-item` is compared with.
//!
//! N tasks loop the guarded update the server runs for a quantity delta,
//! `UPDATE items SET qty = qty + ? WHERE id = ? AND qty + ? >= 0`, on ONE row, each in its own
//! durable transaction (`BEGIN IMMEDIATE` … `COMMIT`, WAL, `synchronous=FULL`), through one
//! writer connection, exactly like the server's SQLite adapter. No HTTP, no history record,
//! no outbox, no idempotency record: whatever `hot-item` loses against this is the cost of
//! those.
//!
//! ```text
//! sqlite-baseline --tasks 1,64 --duration 10s --runs 3 [--dir DIR] [--json FILE]
//! ```

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use trueline_bench::cli::parse_duration;
use trueline_bench::stats::{LatencySummary, median, micros, new_histogram};

const INITIAL_QTY: i64 = 1_000_000;

#[derive(Debug, Parser)]
#[command(
    name = "sqlite-baseline",
    about = "Bare guarded UPDATE on one SQLite row, durable commits"
)]
struct Args {
    /// Concurrent tasks, comma-separated levels.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    tasks: Vec<usize>,
    /// Measured time per run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Runs per level (the report shows medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Connections in the pool (the server's SQLite adapter has exactly one writer).
    #[arg(long, default_value_t = 1)]
    connections: u32,
    /// Directory for the database files (default: a temporary directory; put it on the
    /// same file system as the server's data directory for a fair comparison).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
struct RunResult {
    tasks: usize,
    commits: u64,
    rejected: u64,
    commits_per_s: f64,
    latency_us: LatencySummary,
}

#[derive(Debug, Serialize)]
struct Level {
    tasks: usize,
    median_commits_per_s: f64,
    median_p50_us: f64,
    median_p99_us: f64,
    runs: Vec<RunResult>,
}

async fn one_run(
    dir: &std::path::Path,
    tasks: usize,
    args: &Args,
    n: usize,
) -> anyhow::Result<RunResult> {
    let path = dir.join(format!("baseline-{tasks}-{n}.db"));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(args.connections.max(1))
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    sqlx::query(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL CHECK (qty >= 0)) STRICT",
    )
    .execute(&pool)
    .await?;
    sqlx::query("INSERT INTO items (id, qty) VALUES (1, ?)")
        .bind(INITIAL_QTY)
        .execute(&pool)
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let applied_sum = Arc::new(AtomicI64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let (pool, stop, applied_sum, rejected) = (
            pool.clone(),
            stop.clone(),
            applied_sum.clone(),
            rejected.clone(),
        );
        set.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(task as u64 + 1);
            let mut histogram = new_histogram(3);
            while !stop.load(Ordering::Relaxed) {
                let magnitude = rng.i64(1..=5);
                let delta = if rng.bool() { magnitude } else { -magnitude };
                let started = Instant::now();
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let done =
                    sqlx::query("UPDATE items SET qty = qty + ? WHERE id = ? AND qty + ? >= 0")
                        .bind(delta)
                        .bind(1i64)
                        .bind(delta)
                        .execute(&mut *tx)
                        .await?;
                tx.commit().await?;
                histogram.saturating_record(micros(started.elapsed()));
                if done.rows_affected() == 1 {
                    applied_sum.fetch_add(delta, Ordering::Relaxed);
                } else {
                    rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(histogram)
        });
    }
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut histogram = new_histogram(3);
    while let Some(result) = set.join_next().await {
        histogram.add(result??)?;
    }
    let elapsed = started.elapsed();
    let (qty,): (i64,) = sqlx::query_as("SELECT qty FROM items WHERE id = 1")
        .fetch_one(&pool)
        .await?;
    let expected = INITIAL_QTY + applied_sum.load(Ordering::Relaxed);
    anyhow::ensure!(
        qty == expected,
        "final qty {qty} but applied deltas say {expected}"
    );
    pool.close().await;
    let latency = LatencySummary::of(&histogram);
    let rejected = rejected.load(Ordering::Relaxed);
    Ok(RunResult {
        tasks,
        commits: latency.count,
        rejected,
        commits_per_s: latency.count as f64 / elapsed.as_secs_f64(),
        latency_us: latency,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile::Builder::new()
        .prefix("sqlite-baseline-")
        .tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    println!(
        "sqlite-baseline: guarded UPDATE on one row, BEGIN IMMEDIATE … COMMIT, WAL, \
         synchronous=FULL, {} connection(s), {:.1} s per run, files in {}",
        args.connections,
        args.duration.as_secs_f64(),
        dir.display()
    );
    println!(
        "{:>6} {:>14} {:>10} {:>10} {:>10}  runs (commits/s)",
        "tasks", "commits/s", "p50 ms", "p99 ms", "max ms"
    );
    let mut levels = Vec::new();
    for &tasks in &args.tasks {
        let mut runs = Vec::new();
        for n in 0..args.runs.max(1) {
            runs.push(one_run(&dir, tasks.max(1), &args, n).await?);
        }
        let rates: Vec<f64> = runs.iter().map(|r| r.commits_per_s).collect();
        let level = Level {
            tasks,
            median_commits_per_s: median(&rates),
            median_p50_us: median(
                &runs
                    .iter()
                    .map(|r| r.latency_us.p50_us as f64)
                    .collect::<Vec<_>>(),
            ),
            median_p99_us: median(
                &runs
                    .iter()
                    .map(|r| r.latency_us.p99_us as f64)
                    .collect::<Vec<_>>(),
            ),
            runs,
        };
        let max_us = level
            .runs
            .iter()
            .map(|r| r.latency_us.max_us)
            .max()
            .unwrap_or(0);
        println!(
            "{:>6} {:>14.1} {:>10.2} {:>10.2} {:>10.2}  {}",
            tasks,
            level.median_commits_per_s,
            level.median_p50_us / 1000.0,
            level.median_p99_us / 1000.0,
            max_us as f64 / 1000.0,
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        levels.push(level);
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "tool": "sqlite-baseline",
            "date": trueline_bench::report::now_rfc3339(),
            "machine": trueline_bench::report::machine(),
            "duration_s": args.duration.as_secs_f64(),
            "connections": args.connections,
            "levels": levels,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
    }
    Ok(())
}
