//! Resident memory and CPU time of a process, from `/proc/<pid>/status` (VmRSS) and
//! `/proc/<pid>/stat` (utime + stime), sampled during the measured window.
//!
//! The "server" sampled is one process: the spawned `trueline` (or `--server-pid`). Against
//! PostgreSQL the database's own processes are not in it.

use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// How often the sampler reads `/proc`.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    pub rss_kib: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

/// `VmRSS:   12345 kB` → 12345.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime (field 14) + stime (field 15) of `/proc/<pid>/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14 → index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn read_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcSample {
        rss_kib: parse_status_rss_kib(&status)?,
        cpu_ticks: parse_stat_cpu_ticks(&stat)?,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on otherwise).
pub fn clock_ticks_per_s() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// Peak and average RSS and CPU of a process over a window.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ResourceUsage {
    pub pid: u32,
    pub samples: usize,
    pub rss_peak_kib: u64,
    pub rss_avg_kib: u64,
    /// CPU time over wall time, in % of one core (200 % = two cores busy).
    pub cpu_percent: f64,
}

/// Summarises samples taken over `wall`; `None` without at least two samples.
pub fn summarise(
    pid: u32,
    samples: &[ProcSample],
    wall: Duration,
    ticks_per_s: u64,
) -> Option<ResourceUsage> {
    let (first, last) = (samples.first()?, samples.last()?);
    if samples.len() < 2 || wall.is_zero() {
        return None;
    }
    let cpu_s = last.cpu_ticks.saturating_sub(first.cpu_ticks) as f64 / ticks_per_s as f64;
    Some(ResourceUsage {
        pid,
        samples: samples.len(),
        rss_peak_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        rss_avg_kib: samples.iter().map(|s| s.rss_kib).sum::<u64>() / samples.len() as u64,
        cpu_percent: 100.0 * cpu_s / wall.as_secs_f64(),
    })
}

/// Samples `pid` from `from` until `until`, every [`SAMPLE_EVERY`], or until `stop` changes
/// or its sender is dropped: a workload that runs out of work before the end of the window
/// must not have its CPU averaged over seconds in which nothing was sent. `None` if it
/// stopped before the window opened.
pub async fn sample_window(
    pid: u32,
    from: Instant,
    until: Instant,
    mut stop: tokio::sync::watch::Receiver<()>,
) -> Option<ResourceUsage> {
    tokio::select! {
        () = tokio::time::sleep_until(from) => {}
        _ = stop.changed() => return None,
    }
    let ticks_per_s = clock_ticks_per_s();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut next = started;
    loop {
        if let Some(sample) = read_sample(pid) {
            samples.push(sample);
        }
        next += SAMPLE_EVERY;
        let last = next >= until;
        let stopped = tokio::select! {
            () = tokio::time::sleep_until(next.min(until)) => false,
            _ = stop.changed() => true,
        };
        if last || stopped {
            if let Some(sample) = read_sample(pid) {
                samples.push(sample);
            }
            break;
        }
    }
    summarise(pid, &samples, started.elapsed(), ticks_per_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_the_status_file() {
        let status = "Name:\ttrueline\nVmPeak:\t  900 kB\nVmRSS:\t   45120 kB\nThreads:\t4\n";
        assert_eq!(parse_status_rss_kib(status), Some(45120));
        assert_eq!(parse_status_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_a_tricky_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 6 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn usage_is_cpu_over_wall_with_peak_and_average_rss() {
        let samples = [
            ProcSample {
                rss_kib: 100,
                cpu_ticks: 1000,
            },
            ProcSample {
                rss_kib: 300,
                cpu_ticks: 1100,
            },
            ProcSample {
                rss_kib: 200,
                cpu_ticks: 1150,
            },
        ];
        let usage = summarise(7, &samples, Duration::from_secs(1), 100).unwrap();
        assert_eq!(usage.rss_peak_kib, 300);
        assert_eq!(usage.rss_avg_kib, 200);
        assert!((usage.cpu_percent - 150.0).abs() < 1e-9);
        assert_eq!(
            summarise(7, &samples[..1], Duration::from_secs(1), 100),
            None
        );
    }

    #[tokio::test]
    async fn the_sampler_stops_when_told_and_averages_over_the_time_it_ran() {
        let (stop, stopped) = tokio::sync::watch::channel(());
        let now = Instant::now();
        let sampler = tokio::spawn(sample_window(
            std::process::id(),
            now,
            now + Duration::from_secs(600),
            stopped,
        ));
        tokio::time::sleep(Duration::from_millis(600)).await;
        drop(stop);
        let usage = tokio::time::timeout(Duration::from_secs(5), sampler)
            .await
            .expect("the sampler stopped with the drive, not at the end of the window")
            .unwrap()
            .unwrap();
        assert!((2..=5).contains(&usage.samples), "{usage:?}");
        // Before the window opens: nothing to report.
        let (stop, stopped) = tokio::sync::watch::channel(());
        let later = Instant::now() + Duration::from_secs(600);
        let sampler = tokio::spawn(sample_window(std::process::id(), later, later, stopped));
        stop.send(()).unwrap();
        assert_eq!(sampler.await.unwrap(), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = read_sample(std::process::id()).unwrap();
        assert!(sample.rss_kib > 0);
    }
}
