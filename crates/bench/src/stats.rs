//! Latency histograms (HDR, microseconds), percentile summaries, medians, and the
//! [`Recorder`] every request of a run reports to.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The largest latency a histogram holds exactly; longer ones are clamped (and the client
/// timeout is far below it).
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant digits of the run-wide histograms (0.1 % resolution).
const SIGNIFICANT_DIGITS: u8 = 3;
/// Per-second histograms only feed the charts: 1 % resolution keeps them small.
const TIMELINE_SIGNIFICANT_DIGITS: u8 = 2;

pub fn new_histogram(significant_digits: u8) -> Histogram<u64> {
    // hdrhistogram refuses only low < 1, high < 2·low or more than 5 significant digits;
    // the bounds are constants within those limits and callers pass 2 or 3 digits.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, LATENCY_US_MAX, significant_digits.min(5))
        .expect("constant histogram bounds are valid")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, LATENCY_US_MAX)
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// The median (the mean of the two middle values for an even count); 0 for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// One HTTP request of an operation.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What kind of request (`qty_delta`, `get_item`, …): the per-request histograms' key.
    pub kind: &'static str,
    pub status: u16,
    pub code: Option<String>,
    /// From sending to the end of the body.
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the end of the warm-up.
    pub second: u64,
    pub operations: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Everything recorded for a run, ready to report.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Recorded {
    /// Operations completed whose start (closed loop) or intended time (open loop) fell in
    /// the measured window.
    pub operations: u64,
    /// Latency of an operation; in the open loop from its intended send time.
    pub latency: LatencySummary,
    /// Service time of each request kind, from its actual send.
    pub per_request: BTreeMap<String, LatencySummary>,
    /// Responses in the measured window by status (0 = no answer).
    pub status_counts: BTreeMap<u16, u64>,
    /// Problem `code`s of the non-2xx answers in the measured window.
    pub code_counts: BTreeMap<String, u64>,
    /// Responses of the whole run, warm-up included, by status (for the no-5xx check).
    pub all_status_counts: BTreeMap<u16, u64>,
    pub timeline: Vec<TimelinePoint>,
}

struct Inner {
    operations: u64,
    latency: Histogram<u64>,
    per_request: BTreeMap<&'static str, Histogram<u64>>,
    status_counts: BTreeMap<u16, u64>,
    code_counts: BTreeMap<String, u64>,
    all_status_counts: BTreeMap<u16, u64>,
    timeline: Vec<(u64, Histogram<u64>)>,
}

/// Shared by every client of a run. One short critical section per operation: at the rates a
/// 2-core machine reaches, contention on it is far below the request cost.
pub struct Recorder {
    measure_start: Instant,
    inner: Mutex<Inner>,
}

impl Recorder {
    pub fn new(measure_start: Instant) -> Self {
        Self {
            measure_start,
            inner: Mutex::new(Inner {
                operations: 0,
                latency: new_histogram(SIGNIFICANT_DIGITS),
                per_request: BTreeMap::new(),
                status_counts: BTreeMap::new(),
                code_counts: BTreeMap::new(),
                all_status_counts: BTreeMap::new(),
                timeline: Vec::new(),
            }),
        }
    }

    pub fn measure_start(&self) -> Instant {
        self.measure_start
    }

    /// Records one operation. `measured` says whether it belongs to the measured window;
    /// warm-up operations only count towards `all_status_counts`.
    pub fn record(
        &self,
        measured: bool,
        latency: Duration,
        completed: Instant,
        samples: &[Sample],
    ) {
        let mut inner = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for sample in samples {
            *inner.all_status_counts.entry(sample.status).or_default() += 1;
        }
        if !measured {
            return;
        }
        inner.operations += 1;
        let us = micros(latency);
        inner.latency.saturating_record(us);
        for sample in samples {
            *inner.status_counts.entry(sample.status).or_default() += 1;
            if let Some(code) = &sample.code {
                *inner.code_counts.entry(code.clone()).or_default() += 1;
            }
            inner
                .per_request
                .entry(sample.kind)
                .or_insert_with(|| new_histogram(SIGNIFICANT_DIGITS))
                .saturating_record(micros(sample.elapsed));
        }
        let second = completed
            .saturating_duration_since(self.measure_start)
            .as_secs();
        let slot = match inner.timeline.iter().position(|(s, _)| *s == second) {
            Some(i) => i,
            None => {
                inner
                    .timeline
                    .push((second, new_histogram(TIMELINE_SIGNIFICANT_DIGITS)));
                inner.timeline.len() - 1
            }
        };
        inner.timeline[slot].1.saturating_record(us);
    }

    /// The summary so far; `measured_seconds` bounds the timeline (operations that finished
    /// after the window are in the totals, not in a partial last second).
    pub fn snapshot(&self, measured_seconds: u64) -> Recorded {
        let inner = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut timeline: Vec<TimelinePoint> = inner
            .timeline
            .iter()
            .filter(|(second, _)| *second < measured_seconds)
            .map(|(second, h)| TimelinePoint {
                second: *second,
                operations: h.len(),
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
            })
            .collect();
        timeline.sort_by_key(|p| p.second);
        Recorded {
            operations: inner.operations,
            latency: LatencySummary::of(&inner.latency),
            per_request: inner
                .per_request
                .iter()
                .map(|(k, h)| ((*k).to_owned(), LatencySummary::of(h)))
                .collect(),
            status_counts: inner.status_counts.clone(),
            code_counts: inner.code_counts.clone(),
            all_status_counts: inner.all_status_counts.clone(),
            timeline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn percentiles_of_a_uniform_distribution_land_within_the_histogram_precision() {
        let mut h = new_histogram(3);
        for us in 1..=10_000u64 {
            h.record(us).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 10_000);
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001;
        assert!(close(s.p50_us, 5_000), "{s:?}");
        assert!(close(s.p90_us, 9_000), "{s:?}");
        assert!(close(s.p99_us, 9_900), "{s:?}");
        assert!(close(s.p999_us, 9_990), "{s:?}");
        assert!(close(s.max_us, 10_000), "{s:?}");
        assert!((s.mean_us - 5_000.5).abs() < 10.0);
    }

    #[test]
    fn one_slow_request_in_a_thousand_shows_at_p999_not_p99() {
        let mut h = new_histogram(3);
        for _ in 0..999 {
            h.record(1_000).unwrap();
        }
        h.record(2_000_000).unwrap();
        let s = LatencySummary::of(&h);
        assert!(s.p99_us < 1_100);
        assert!(s.max_us >= 1_999_000);
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeroes() {
        assert_eq!(
            LatencySummary::of(&new_histogram(3)),
            LatencySummary::default()
        );
    }

    #[test]
    fn latencies_are_clamped_to_the_histogram_range() {
        assert_eq!(micros(Duration::ZERO), 1);
        assert_eq!(micros(Duration::from_secs(100_000)), LATENCY_US_MAX);
    }

    #[tokio::test]
    async fn the_recorder_keeps_warmup_out_of_the_figures_but_in_the_5xx_check() {
        let start = Instant::now();
        let recorder = Recorder::new(start);
        let sample = |status, code: Option<&str>| Sample {
            kind: "qty_delta",
            status,
            code: code.map(str::to_owned),
            elapsed: Duration::from_millis(2),
        };
        recorder.record(
            false,
            Duration::from_millis(2),
            start,
            &[sample(500, Some("x"))],
        );
        recorder.record(true, Duration::from_millis(3), start, &[sample(200, None)]);
        recorder.record(
            true,
            Duration::from_millis(4),
            start + Duration::from_millis(1500),
            &[sample(400, Some("insufficient_quantity"))],
        );
        let r = recorder.snapshot(10);
        assert_eq!(r.operations, 2);
        assert_eq!(r.status_counts, BTreeMap::from([(200, 1), (400, 1)]));
        assert_eq!(
            r.all_status_counts,
            BTreeMap::from([(200, 1), (400, 1), (500, 1)])
        );
        assert_eq!(
            r.code_counts,
            BTreeMap::from([("insufficient_quantity".to_owned(), 1)])
        );
        assert_eq!(r.per_request["qty_delta"].count, 2);
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(r.timeline[1].second, 1);
    }
}
