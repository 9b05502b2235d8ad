//! The command line: `trueline-bench run <workload>` and `trueline-bench sweep <workload>`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "trueline-bench",
    version,
    about = "Load tool for the Trueline server: closed/open loop, HDR latencies, correctness checks",
    after_help = "Examples:\n  trueline-bench run hot-item --spawn --clients 16 --duration 15s\n  \
                  trueline-bench run spread --url http://127.0.0.1:8080 --rate 500 --json out.json\n  \
                  trueline-bench sweep hot-item --spawn --clients 1,4,16,64 --runs 3 --chart-dir charts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One run of a workload: table on stdout, exit 1 if the correctness checks fail.
    Run(RunCmd),
    /// Repeat a workload at several concurrency levels and report medians of the runs.
    Sweep(SweepCmd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `PATCH /items/{id}/qty` on one item, each request with its own Idempotency-Key.
    HotItem,
    /// Quantity deltas spread over `--items` items (10,000 by default).
    Spread,
    /// 80 % reads (GET item, list), 10 % creates, 10 % deltas.
    Mixed,
    /// `POST /events` (`--batch 1`) or `POST /streams/{s}/events` (`--batch N`).
    EventsAppend,
    /// `GET /events/{id}` and `GET /streams/{s}` over a populated log.
    EventsRead,
    /// Candidates start and submit an assessment through their invites.
    Submit,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::HotItem => "hot-item",
            Workload::Spread => "spread",
            Workload::Mixed => "mixed",
            Workload::EventsAppend => "events-append",
            Workload::EventsRead => "events-read",
            Workload::Submit => "submit",
        }
    }
}

#[derive(Debug, Args)]
pub struct RunCmd {
    #[arg(value_enum)]
    pub workload: Workload,
    /// Concurrent clients (closed loop), or token/stream owners in the open loop.
    #[arg(long, default_value_t = 16, value_parser = parse_clients)]
    pub clients: usize,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct SweepCmd {
    #[arg(value_enum)]
    pub workload: Workload,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64", value_parser = parse_clients)]
    pub clients: Vec<usize>,
    /// Runs per level; the report shows their medians (at least 3 for a median to mean much).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Base URL of a running server.
    #[arg(long, conflicts_with = "spawn", required_unless_present = "spawn")]
    pub url: Option<String>,
    /// Start a server on a fresh temporary data directory (a new one for every run).
    #[arg(long)]
    pub spawn: bool,
    /// The server binary for `--spawn` [default: $CARGO_TARGET_DIR/release/trueline, else
    /// target/release/trueline].
    #[arg(long, requires = "spawn")]
    pub server_bin: Option<PathBuf>,
    /// `postgres://…` for the spawned server (passed as TRUELINE_DATABASE__URL).
    #[arg(long, requires = "spawn")]
    pub database_url: Option<String>,
    /// A shell command (`sh -c`) run before each spawned server starts, after the previous
    /// one stopped; the run fails if it does. For a fresh PostgreSQL database every run:
    /// `psql …/postgres -c 'DROP DATABASE IF EXISTS b' -c 'CREATE DATABASE b'`.
    #[arg(long, requires = "spawn")]
    pub before_each_run: Option<String>,
    /// Log level of the spawned server (its default is `info`: one line per request).
    #[arg(long, requires = "spawn")]
    pub server_log_level: Option<String>,
    /// Pid of the server to sample RSS and CPU from (default: the spawned child; none with
    /// --url).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Measured time, after the warm-up (e.g. 30s, 500ms, 2m; at most 30 days).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time before measuring: requests run but are not recorded (they are verified).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open loop: requests per second on a fixed schedule (default: closed loop; at most
    /// 10,000,000).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Open loop: requests in flight at most; a request whose slot is not free at its
    /// intended time waits (counted) and its latency still starts at the intended time.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Starting quantity of every item (small values make some deltas `insufficient_quantity`).
    #[arg(long, default_value_t = 1_000_000)]
    pub initial_qty: u64,
    /// Deltas are uniform in ±1..=N (never 0).
    #[arg(long, default_value_t = 5)]
    pub max_delta: i64,
    /// Items created before the run [default: 10000 for spread, 1000 for mixed].
    #[arg(long)]
    pub items: Option<usize>,
    /// Events per append request (events-append: 1 = `POST /events`, N > 1 = streams).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Size of each event's payload string, in bytes.
    #[arg(long, default_value_t = 100)]
    pub event_bytes: usize,
    /// Events written before an events-read run.
    #[arg(long, default_value_t = 5_000)]
    pub populate: usize,
    /// Streams populated for events-read.
    #[arg(long, default_value_t = 20)]
    pub streams: usize,
    /// Invites created before a submit run (a client stops when none are left).
    #[arg(long, default_value_t = 2_000)]
    pub invites: usize,
    /// Questions of the submit workload's assessment.
    #[arg(long, default_value_t = 10)]
    pub questions: usize,
    /// One member account and token per client (for servers that rate-limit per token).
    #[arg(long)]
    pub token_per_client: bool,
    /// Events read back by id at the end (all acknowledged ones up to this many, else a
    /// random sample of this size; the full log is always compared through the listing).
    #[arg(long, default_value_t = 20_000)]
    pub verify_by_id_max: usize,
    /// Largest fraction of the measured operations allowed to fail (0.01 = 1 %) before the
    /// run fails (exit 1). A failure is any answer other than 2xx or an expected refusal
    /// (`insufficient_quantity` on a delta), no answer, or an open-loop request never sent.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub max_error_rate: f64,
    /// Per-request client timeout (the server's own limit is 30 s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Random seed (deltas, item choice, payloads).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the machine-readable report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write SVG charts into this directory.
    #[arg(long)]
    pub chart_dir: Option<PathBuf>,
}

/// The longest duration accepted: far beyond any benchmark, and far from the overflow of
/// `Instant + Duration`.
pub const DURATION_MAX: Duration = Duration::from_secs(30 * 24 * 3600);

/// `500ms`, `15s`, `2m`, or a bare number of seconds; at most [`DURATION_MAX`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 15s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}` (use ms, s or m)"
            ));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a valid duration"));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if d <= DURATION_MAX => Ok(d),
        _ => Err(format!(
            "`{text}` is longer than the tool's limit of {} days",
            DURATION_MAX.as_secs() / 86_400
        )),
    }
}

/// A number of clients: at least 1 (0 would run one client and report zero).
pub fn parse_clients(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("the number of clients must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a number of clients")),
    }
}

/// An open-loop rate: positive and at most [`crate::schedule::RATE_MAX`].
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of requests per second"))?;
    crate::schedule::Schedule::new(rate).map(|s| s.rate_per_s())
}

/// A fraction in 0..=1.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "`{text}` is not a fraction between 0 and 1 (0.01 = 1 %)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_milliseconds_seconds_minutes_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn durations_with_unknown_units_or_no_number_are_refused() {
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn huge_durations_are_refused_with_a_message_instead_of_a_panic() {
        for text in ["99999999999999999999999s", "100000000m", "43201m"] {
            let e = parse_duration(text).unwrap_err();
            assert!(
                e.contains("longer than the tool's limit of 30 days"),
                "{text}: {e}"
            );
        }
        assert_eq!(
            parse_duration("30d").unwrap_err(),
            "unknown unit `d` in `30d` (use ms, s or m)"
        );
        assert_eq!(parse_duration("43200m"), Ok(DURATION_MAX));
    }

    #[test]
    fn zero_clients_huge_rates_and_error_rates_outside_zero_to_one_are_refused() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["trueline-bench", "run", "hot-item", "--spawn"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map_err(|e| e.to_string())
        };
        let e = parse(&["--clients", "0"]).unwrap_err();
        assert!(e.contains("must be at least 1"), "{e}");
        let e = parse(&["--rate", "1e18"]).unwrap_err();
        assert!(e.contains("above the tool's limit"), "{e}");
        let e = parse(&["--max-error-rate", "5"]).unwrap_err();
        assert!(e.contains("not a fraction between 0 and 1"), "{e}");
        assert!(parse(&["--rate", "500", "--max-error-rate", "0.01"]).is_ok());
        let sweep = Cli::try_parse_from([
            "trueline-bench",
            "sweep",
            "hot-item",
            "--spawn",
            "--clients",
            "1,0",
        ]);
        assert!(sweep.is_err());
    }

    #[test]
    fn the_command_line_parses_a_sweep_with_a_client_list() {
        let cli = Cli::try_parse_from([
            "trueline-bench",
            "sweep",
            "hot-item",
            "--spawn",
            "--clients",
            "1,4,16,64",
            "--runs",
            "3",
        ])
        .unwrap();
        let Command::Sweep(sweep) = cli.command else {
            panic!("not a sweep")
        };
        assert_eq!(sweep.clients, vec![1, 4, 16, 64]);
        assert_eq!(sweep.workload, Workload::HotItem);
        assert!(sweep.common.spawn);
    }

    #[test]
    fn a_run_needs_either_a_url_or_spawn_but_not_both() {
        assert!(Cli::try_parse_from(["trueline-bench", "run", "spread"]).is_err());
        assert!(
            Cli::try_parse_from([
                "trueline-bench",
                "run",
                "spread",
                "--spawn",
                "--url",
                "http://127.0.0.1:1"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from(["trueline-bench", "run", "spread", "--url", "http://x"]).is_ok()
        );
    }
}
