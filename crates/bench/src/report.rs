//! The reports: the JSON documents (`--json`), the human tables on stdout, and the machine
//! description (`/proc/cpuinfo`, `/proc/meminfo`, the kernel's uname fields).

use crate::driver::OpenLoopStats;
use crate::procfs::ResourceUsage;
use crate::stats::{LatencySummary, TimelinePoint, median};
use crate::verify::Verification;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_kib: u64,
    /// `sysname release version machine`, like `uname -srvm`.
    pub uname: String,
    /// `/proc/loadavg` when the report was made: other work on a shared machine shows here.
    pub load_average: String,
}

/// (logical CPUs, model name) from `/proc/cpuinfo`.
pub fn parse_cpuinfo(text: &str) -> (usize, String) {
    let processors = text.lines().filter(|l| l.starts_with("processor")).count();
    let model = text
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    (processors, model)
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let (processors, cpu_model) = parse_cpuinfo(&cpuinfo);
    let nproc = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(processors);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let kernel = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    Machine {
        nproc,
        cpu_model,
        mem_total_kib,
        uname: format!(
            "{} {} {} {}",
            kernel("ostype"),
            kernel("osrelease"),
            kernel("version"),
            std::env::consts::ARCH
        ),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Parameters {
    pub clients: usize,
    pub mode: String,
    pub duration_s: f64,
    pub warmup_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    pub max_in_flight: usize,
    pub initial_qty: u64,
    pub max_delta: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
    pub batch: usize,
    pub event_bytes: usize,
    pub populate: usize,
    pub streams: usize,
    pub invites: usize,
    pub questions: usize,
    pub token_per_client: bool,
    /// `--max-error-rate`, a fraction.
    pub max_error_rate: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Target {
    pub url: String,
    pub spawned: bool,
    /// `sqlite (temporary data directory)`, a redacted PostgreSQL URL, or `unknown` (--url).
    pub database: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub measured_s: f64,
    /// Successful operations (every request answered 2xx) in the measured window.
    pub operations: u64,
    /// Successful operations per second: failures and refusals are not throughput.
    pub throughput_per_s: f64,
    /// Operations refused as the workload expects (`insufficient_quantity` on a delta).
    pub refused_operations: u64,
    /// Operations that failed: any other non-2xx, no answer, or (open loop) never sent.
    pub failed_operations: u64,
    /// `failed_operations` over all measured operations.
    pub error_rate: f64,
    /// Per successful operation; open loop: from the intended send time, plus every
    /// operation never sent at a lower bound of its wait.
    pub latency_us: LatencySummary,
    /// Per request kind, 2xx answers only, from the actual send.
    pub per_request_us: BTreeMap<String, LatencySummary>,
    pub status_counts: BTreeMap<u16, u64>,
    pub code_counts: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoopStats>,
    /// The sampled server process only: the spawned `trueline` or `--server-pid`. Against
    /// PostgreSQL the database server's own CPU and memory are not in it.
    pub server: Option<ResourceUsage>,
    /// This tool's own process (it shares the machine with the server).
    pub client: Option<ResourceUsage>,
    pub exhausted: bool,
    pub notes: Vec<String>,
    pub timeline: Vec<TimelinePoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub tool: String,
    pub date: String,
    pub workload: String,
    pub parameters: Parameters,
    pub target: Target,
    pub machine: Machine,
    pub results: Results,
    pub verification: Verification,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn counts<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

fn latency_row(out: &mut String, label: &str, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {label:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        l.count,
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        format!("{:.2}", l.mean_us / 1000.0)
    );
}

/// The human table printed after a run.
pub fn render_run(report: &RunReport) -> String {
    let mut out = String::new();
    let p = &report.parameters;
    let r = &report.results;
    let _ = writeln!(
        out,
        "{}  {}  {}, {} client(s), {:.1} s measured after {:.1} s warm-up",
        report.tool, report.workload, p.mode, p.clients, r.measured_s, p.warmup_s
    );
    let _ = writeln!(
        out,
        "target     {} ({}{})",
        report.target.url,
        if report.target.spawned {
            "spawned, "
        } else {
            ""
        },
        report.target.database
    );
    let _ = writeln!(
        out,
        "machine    {} CPU(s), {}, load average {}, {}",
        report.machine.nproc, report.machine.cpu_model, report.machine.load_average, report.date
    );
    let _ = writeln!(
        out,
        "throughput {:.1} operations/s ({} successful operations)",
        r.throughput_per_s, r.operations
    );
    let _ = writeln!(
        out,
        "outcomes   {} succeeded, {} refused as expected, {} failed: error rate {:.2} % \
         (--max-error-rate {:.2} %)",
        r.operations,
        r.refused_operations,
        r.failed_operations,
        r.error_rate * 100.0,
        p.max_error_rate * 100.0
    );
    let _ = writeln!(
        out,
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max", "mean"
    );
    let label = if r.open_loop.is_some() {
        "operation (intended)"
    } else {
        "operation"
    };
    // Failed and refused operations are in neither row: a fast 429 is not a fast server.
    latency_row(&mut out, label, &r.latency_us);
    for (kind, l) in &r.per_request_us {
        latency_row(&mut out, kind, l);
    }
    let _ = writeln!(out, "status     {}", counts(&r.status_counts));
    let _ = writeln!(out, "codes      {}", counts(&r.code_counts));
    if let Some(o) = &r.open_loop {
        let _ = writeln!(
            out,
            "open loop  {:.1}/s, max {} in flight: {} scheduled, {} sent, {} sent late (>5 ms), \
             {} waited for a slot, {} unsent",
            o.rate_per_s,
            o.max_in_flight,
            o.scheduled,
            o.sent,
            o.sent_late,
            o.waited_for_slot,
            o.unsent
        );
        if o.unsent > 0 {
            let _ = writeln!(
                out,
                "note       the {} unsent operations are failures, and in the operation latency \
                 with their wait until the end of the run: a lower bound",
                o.unsent
            );
        }
    }
    match &r.server {
        Some(s) => {
            let _ = writeln!(
                out,
                "trueline   process {} only (not a database server): CPU {:.1} % (of one core), \
                 RSS peak {}, average {}",
                s.pid,
                s.cpu_percent,
                mib(s.rss_peak_kib),
                mib(s.rss_avg_kib)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "trueline   process not sampled (pass --server-pid or --spawn)"
            );
        }
    }
    if let Some(c) = &r.client {
        let _ = writeln!(
            out,
            "client     CPU {:.1} %, RSS peak {}",
            c.cpu_percent,
            mib(c.rss_peak_kib)
        );
    }
    if r.exhausted {
        let _ = writeln!(
            out,
            "note       the workload ran out of work before the end"
        );
    }
    for note in &r.notes {
        let _ = writeln!(out, "note       {note}");
    }
    render_verification(&mut out, &report.verification);
    out
}

fn render_verification(out: &mut String, v: &Verification) {
    let _ = writeln!(
        out,
        "verified   {}",
        if v.passed { "PASSED" } else { "FAILED" }
    );
    for check in &v.checks {
        let _ = writeln!(
            out,
            "  [{}] {}: {}",
            if check.passed { "ok" } else { "FAIL" },
            check.name,
            check.detail
        );
        for problem in &check.problems {
            let _ = writeln!(out, "         - {problem}");
        }
    }
}

/// The figures of one run that a sweep keeps.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct RunSummary {
    /// Successful operations per second.
    pub throughput_per_s: f64,
    /// Failed over all measured operations; of a level, the worst run's (a median would hide
    /// one bad run).
    pub error_rate: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Of the trueline process only (see [`Results::server`]).
    pub server_cpu_percent: Option<f64>,
    pub server_rss_peak_kib: Option<f64>,
    pub verified: bool,
}

impl RunSummary {
    pub fn of(report: &RunReport) -> Self {
        let l = &report.results.latency_us;
        Self {
            throughput_per_s: report.results.throughput_per_s,
            error_rate: report.results.error_rate,
            p50_us: l.p50_us as f64,
            p90_us: l.p90_us as f64,
            p99_us: l.p99_us as f64,
            p999_us: l.p999_us as f64,
            max_us: l.max_us as f64,
            server_cpu_percent: report.results.server.as_ref().map(|s| s.cpu_percent),
            server_rss_peak_kib: report
                .results
                .server
                .as_ref()
                .map(|s| s.rss_peak_kib as f64),
            verified: report.verification.passed,
        }
    }

    /// Field-by-field medians (each percentile is the median of that percentile over runs).
    pub fn median_of(runs: &[RunSummary]) -> Self {
        let m = |f: fn(&RunSummary) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let opt = |f: fn(&RunSummary) -> Option<f64>| {
            let values: Vec<f64> = runs.iter().filter_map(f).collect();
            (!values.is_empty()).then(|| median(&values))
        };
        Self {
            throughput_per_s: m(|r| r.throughput_per_s),
            error_rate: runs.iter().map(|r| r.error_rate).fold(0.0, f64::max),
            p50_us: m(|r| r.p50_us),
            p90_us: m(|r| r.p90_us),
            p99_us: m(|r| r.p99_us),
            p999_us: m(|r| r.p999_us),
            max_us: m(|r| r.max_us),
            server_cpu_percent: opt(|r| r.server_cpu_percent),
            server_rss_peak_kib: opt(|r| r.server_rss_peak_kib),
            verified: runs.iter().all(|r| r.verified),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub clients: usize,
    pub median: RunSummary,
    pub runs: Vec<RunSummary>,
}

impl SweepPoint {
    pub fn new(clients: usize, runs: Vec<RunSummary>) -> Self {
        Self {
            clients,
            median: RunSummary::median_of(&runs),
            runs,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub tool: String,
    pub date: String,
    pub workload: String,
    pub runs_per_level: usize,
    /// Of the first run (`clients` varies).
    pub parameters: Parameters,
    pub target: Target,
    pub machine: Machine,
    pub points: Vec<SweepPoint>,
    /// Every run in full.
    pub run_reports: Vec<RunReport>,
}

pub fn render_sweep(report: &SweepReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  sweep {}  {}, {} run(s) per level, {:.1} s measured + {:.1} s warm-up each",
        report.tool,
        report.workload,
        report.parameters.mode,
        report.runs_per_level,
        report.parameters.duration_s,
        report.parameters.warmup_s
    );
    let _ = writeln!(
        out,
        "machine    {} CPU(s), {}, {}",
        report.machine.nproc, report.machine.cpu_model, report.date
    );
    let _ = writeln!(
        out,
        "medians of the runs (successful operations only; latency in ms; throughput range = \
         min–max of the runs; err % = failed operations of the worst run; CPU % = the trueline \
         process only)"
    );
    let _ = writeln!(
        out,
        "{:>7} {:>12} {:>19} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "clients",
        "ops/s",
        "range",
        "err %",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "CPU %",
        "verified"
    );
    for point in &report.points {
        let m = &point.median;
        let (lo, hi) = point.runs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| {
            (lo.min(r.throughput_per_s), hi.max(r.throughput_per_s))
        });
        let _ = writeln!(
            out,
            "{:>7} {:>12.1} {:>19} {:>7.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>9}",
            point.clients,
            m.throughput_per_s,
            format!("{lo:.0}–{hi:.0}"),
            m.error_rate * 100.0,
            m.p50_us / 1000.0,
            m.p90_us / 1000.0,
            m.p99_us / 1000.0,
            m.p999_us / 1000.0,
            m.max_us / 1000.0,
            m.server_cpu_percent
                .map(|c| format!("{c:.0}"))
                .unwrap_or_else(|| "-".into()),
            if m.verified { "yes" } else { "NO" }
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::verify::Check;

    pub(crate) fn sample_report() -> RunReport {
        RunReport {
            tool: "trueline-bench 0.1.0".into(),
            date: "2026-01-01T00:00:00Z".into(),
            workload: "hot-item".into(),
            parameters: Parameters {
                clients: 4,
                mode: "closed loop".into(),
                duration_s: 10.0,
                warmup_s: 2.0,
                rate_per_s: None,
                max_in_flight: 256,
                initial_qty: 1_000_000,
                max_delta: 5,
                items: None,
                batch: 1,
                event_bytes: 100,
                populate: 0,
                streams: 0,
                invites: 0,
                questions: 0,
                token_per_client: false,
                max_error_rate: 0.0,
                seed: 7,
            },
            target: Target {
                url: "http://127.0.0.1:1".into(),
                spawned: true,
                database: "sqlite (temporary data directory)".into(),
            },
            machine: Machine {
                nproc: 2,
                cpu_model: "Test CPU".into(),
                mem_total_kib: 1024,
                uname: "Linux".into(),
                load_average: "0.50 0.40 0.30".into(),
            },
            results: Results {
                measured_s: 10.0,
                operations: 4990,
                throughput_per_s: 499.0,
                refused_operations: 10,
                failed_operations: 0,
                error_rate: 0.0,
                latency_us: LatencySummary {
                    count: 4990,
                    mean_us: 2100.0,
                    p50_us: 2000,
                    p90_us: 3000,
                    p99_us: 7500,
                    p999_us: 12_000,
                    max_us: 20_000,
                },
                per_request_us: BTreeMap::new(),
                status_counts: BTreeMap::from([(200, 4990), (400, 10)]),
                code_counts: BTreeMap::from([("insufficient_quantity".into(), 10)]),
                open_loop: None,
                server: Some(ResourceUsage {
                    pid: 42,
                    samples: 40,
                    rss_peak_kib: 51_200,
                    rss_avg_kib: 40_960,
                    cpu_percent: 123.4,
                }),
                client: None,
                exhausted: false,
                notes: vec!["1 item(s) at initial qty 1000000".into()],
                timeline: Vec::new(),
            },
            verification: Verification::new(vec![
                Check::from_problems("no 5xx", "5000 responses".into(), vec![]),
                Check::from_problems(
                    "quantities and history match the acknowledged deltas",
                    "1 items".into(),
                    vec!["item x: qty 1 but …".into()],
                ),
            ]),
        }
    }

    #[test]
    fn the_run_table_shows_throughput_percentiles_statuses_resources_and_verdict() {
        let text = render_run(&sample_report());
        assert!(
            text.contains("throughput 499.0 operations/s (4990 successful operations)"),
            "{text}"
        );
        assert!(
            text.contains(
                "outcomes   4990 succeeded, 10 refused as expected, 0 failed: error rate 0.00 %"
            ),
            "{text}"
        );
        // p50 2.00 ms, p90 3.00, p99 7.50, p99.9 12.00, max 20.00
        assert!(
            text.contains("2.00      3.00      7.50     12.00     20.00"),
            "{text}"
        );
        assert!(text.contains("status     200: 4990  400: 10"), "{text}");
        assert!(
            text.contains("codes      insufficient_quantity: 10"),
            "{text}"
        );
        assert!(text.contains(
            "trueline   process 42 only (not a database server): CPU 123.4 % (of one core), RSS \
             peak 50.0 MiB, average 40.0 MiB"
        ));
        assert!(text.contains("verified   FAILED"), "{text}");
        assert!(text.contains("  [ok] no 5xx: 5000 responses"), "{text}");
        assert!(text.contains("  [FAIL] quantities"), "{text}");
        assert!(text.contains("         - item x: qty 1"), "{text}");
    }

    #[test]
    fn the_json_report_names_workload_parameters_machine_and_results() {
        let json = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(json["workload"], "hot-item");
        assert_eq!(json["parameters"]["clients"], 4);
        assert_eq!(json["machine"]["nproc"], 2);
        assert_eq!(json["results"]["latency_us"]["p99_us"], 7500);
        assert_eq!(json["results"]["status_counts"]["200"], 4990);
        assert_eq!(json["results"]["refused_operations"], 10);
        assert_eq!(json["results"]["failed_operations"], 0);
        assert_eq!(json["results"]["error_rate"], 0.0);
        assert_eq!(json["parameters"]["max_error_rate"], 0.0);
        assert_eq!(json["verification"]["passed"], false);
    }

    #[test]
    fn sweep_medians_are_taken_per_field_over_the_runs() {
        let run = |t: f64, p99: f64, ok: bool| RunSummary {
            throughput_per_s: t,
            p99_us: p99,
            verified: ok,
            server_cpu_percent: Some(t / 10.0),
            error_rate: t / 1e5,
            ..RunSummary::default()
        };
        let point = SweepPoint::new(
            16,
            vec![
                run(900.0, 5000.0, true),
                run(1000.0, 9000.0, true),
                run(1200.0, 4000.0, true),
            ],
        );
        assert_eq!(point.median.throughput_per_s, 1000.0);
        assert_eq!(point.median.error_rate, 0.012, "the worst run's");
        assert_eq!(point.median.p99_us, 5000.0);
        assert_eq!(point.median.server_cpu_percent, Some(100.0));
        assert!(point.median.verified);
        let failed = SweepPoint::new(1, vec![run(1.0, 1.0, true), run(1.0, 1.0, false)]);
        assert!(!failed.median.verified);
    }

    #[test]
    fn the_sweep_table_has_one_row_per_level_with_the_range() {
        let run = |t: f64| RunSummary {
            throughput_per_s: t,
            p50_us: 1500.0,
            error_rate: 0.0125,
            verified: true,
            ..RunSummary::default()
        };
        let report = SweepReport {
            tool: "trueline-bench".into(),
            date: "d".into(),
            workload: "hot-item".into(),
            runs_per_level: 3,
            parameters: sample_report().parameters,
            target: sample_report().target,
            machine: sample_report().machine,
            points: vec![SweepPoint::new(4, vec![run(100.0), run(120.0), run(110.0)])],
            run_reports: Vec::new(),
        };
        let text = render_sweep(&report);
        let row = text.lines().last().unwrap();
        assert!(row.contains("110.0"), "{row}");
        assert!(row.contains("100–120"), "{row}");
        assert!(row.contains("1.50"), "{row}");
        assert!(row.contains(" 1.25 "), "{row}");
        assert!(text.contains("err %"), "{text}");
        assert!(row.trim_end().ends_with("yes"), "{row}");
    }

    #[test]
    fn cpuinfo_gives_the_processor_count_and_model() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpuinfo(text), (2, "AMD EPYC 7B13".into()));
    }

    #[test]
    fn database_passwords_never_reach_the_report() {
        assert_eq!(
            redact_url("postgres://postgres:hunter2@127.0.0.1:5432/db"),
            "postgres://postgres:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/db"),
            "postgres://postgres@127.0.0.1/db"
        );
    }
}
