//! Latency histograms (HDR, microseconds), percentile summaries, medians, and the
//! [`Recorder`] every request of a run reports to.
//!
//! Only *successful* operations (every request answered 2xx) count as throughput and feed
//! the latency histograms: a server that answers most requests with a fast 429 or 503 must
//! not look fast. Expected refusals (a domain answer the workload provokes on purpose, see
//! [`Outcome`]) and failures are counted apart; the status and problem-code counts cover
//! every answer.

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

/// How an operation ended, for the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every request answered 2xx: counts as throughput and latency.
    Succeeded,
    /// A refusal the workload provokes on purpose and the server is right to give
    /// (`insufficient_quantity` on a delta with a small stock): not an error, not throughput.
    Refused,
    /// Anything else: a 4xx the workload did not ask for (429, 401, …), a 5xx, no answer,
    /// or (open loop) never sent. Counts towards the error rate.
    Failed,
}

/// The outcome of an operation made of `samples`: failed if any answer is neither 2xx nor
/// an expected refusal, else refused if any is a refusal, else succeeded.
pub fn classify(samples: &[Sample], expected_refusal: impl Fn(&Sample) -> bool) -> Outcome {
    let mut outcome = Outcome::Succeeded;
    for sample in samples {
        if (200..300).contains(&sample.status) {
            continue;
        }
        if !expected_refusal(sample) {
            return Outcome::Failed;
        }
        outcome = Outcome::Refused;
    }
    outcome
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the end of the warm-up. Every second of the measured window has a
    /// point, so a stall shows as zeroes instead of a line drawn across it.
    pub second: u64,
    /// Successful operations completed in that second.
    pub operations: u64,
    /// Of those operations; 0 in a second without any.
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Everything recorded for a run, ready to report.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Recorded {
    /// Successful operations whose start (closed loop) or intended time (open loop) fell in
    /// the measured window.
    pub operations: u64,
    /// Measured operations refused as the workload expects (see [`Outcome::Refused`]).
    pub refused: u64,
    /// Measured operations that failed, open-loop operations never sent included.
    pub failed: u64,
    /// Latency of a successful operation; in the open loop from its intended send time, and
    /// including every measured operation never sent, at a lower bound (see
    /// [`Recorder::record_unsent`]).
    pub latency: LatencySummary,
    /// Service time of each request kind's 2xx answers, from the actual send.
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
    refused: u64,
    failed: u64,
    latency: Histogram<u64>,
    per_request: BTreeMap<&'static str, Histogram<u64>>,
    status_counts: BTreeMap<u16, u64>,
    code_counts: BTreeMap<String, u64>,
    all_status_counts: BTreeMap<u16, u64>,
    /// Second since the end of the warm-up → latencies of the operations completed in it.
    timeline: BTreeMap<u64, Histogram<u64>>,
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
                refused: 0,
                failed: 0,
                latency: new_histogram(SIGNIFICANT_DIGITS),
                per_request: BTreeMap::new(),
                status_counts: BTreeMap::new(),
                code_counts: BTreeMap::new(),
                all_status_counts: BTreeMap::new(),
                timeline: BTreeMap::new(),
            }),
        }
    }

    pub fn measure_start(&self) -> Instant {
        self.measure_start
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records one operation. `measured` says whether it belongs to the measured window;
    /// warm-up operations only count towards `all_status_counts`.
    pub fn record(
        &self,
        measured: bool,
        outcome: Outcome,
        latency: Duration,
        completed: Instant,
        samples: &[Sample],
    ) {
        let mut inner = self.lock();
        for sample in samples {
            *inner.all_status_counts.entry(sample.status).or_default() += 1;
        }
        if !measured {
            return;
        }
        for sample in samples {
            *inner.status_counts.entry(sample.status).or_default() += 1;
            if let Some(code) = &sample.code {
                *inner.code_counts.entry(code.clone()).or_default() += 1;
            }
            // A 429 or a refusal answered in microseconds is not the service time of the
            // request kind.
            if (200..300).contains(&sample.status) {
                inner
                    .per_request
                    .entry(sample.kind)
                    .or_insert_with(|| new_histogram(SIGNIFICANT_DIGITS))
                    .saturating_record(micros(sample.elapsed));
            }
        }
        match outcome {
            Outcome::Succeeded => {}
            Outcome::Refused => {
                inner.refused += 1;
                return;
            }
            Outcome::Failed => {
                inner.failed += 1;
                return;
            }
        }
        inner.operations += 1;
        let us = micros(latency);
        inner.latency.saturating_record(us);
        let second = completed
            .saturating_duration_since(self.measure_start)
            .as_secs();
        inner
            .timeline
            .entry(second)
            .or_insert_with(|| new_histogram(TIMELINE_SIGNIFICANT_DIGITS))
            .saturating_record(us);
    }

    /// Records a measured open-loop operation that was never sent (every in-flight slot was
    /// taken until the run ended). `waited` is from its intended send time to the end of the
    /// drain: a lower bound of the latency it would have had. Leaving it out would hide the
    /// very stall that kept it unsent (coordinated omission); it also counts as failed.
    pub fn record_unsent(&self, waited: Duration) {
        let mut inner = self.lock();
        inner.failed += 1;
        inner.latency.saturating_record(micros(waited));
    }

    /// The summary so far; the timeline has one point for every second in
    /// `0..measured_seconds` (operations that finished after the window are in the totals,
    /// not in a partial last second).
    pub fn snapshot(&self, measured_seconds: u64) -> Recorded {
        let inner = self.lock();
        let timeline = (0..measured_seconds)
            .map(|second| match inner.timeline.get(&second) {
                Some(h) => TimelinePoint {
                    second,
                    operations: h.len(),
                    p50_us: h.value_at_quantile(0.5),
                    p99_us: h.value_at_quantile(0.99),
                },
                None => TimelinePoint {
                    second,
                    operations: 0,
                    p50_us: 0,
                    p99_us: 0,
                },
            })
            .collect();
        Recorded {
            operations: inner.operations,
            refused: inner.refused,
            failed: inner.failed,
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

/// Failed operations over all measured ones (succeeded, refused and failed); 0 for none.
pub fn error_rate(recorded: &Recorded) -> f64 {
    let total = recorded.operations + recorded.refused + recorded.failed;
    if total == 0 {
        0.0
    } else {
        recorded.failed as f64 / total as f64
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

    fn sample(status: u16, code: Option<&str>) -> Sample {
        Sample {
            kind: "qty_delta",
            status,
            code: code.map(str::to_owned),
            elapsed: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn the_recorder_keeps_warmup_out_of_the_figures_but_in_the_5xx_check() {
        let start = Instant::now();
        let recorder = Recorder::new(start);
        recorder.record(
            false,
            Outcome::Failed,
            Duration::from_millis(2),
            start,
            &[sample(500, Some("x"))],
        );
        recorder.record(
            true,
            Outcome::Succeeded,
            Duration::from_millis(3),
            start,
            &[sample(200, None)],
        );
        recorder.record(
            true,
            Outcome::Refused,
            Duration::from_millis(4),
            start + Duration::from_millis(1500),
            &[sample(400, Some("insufficient_quantity"))],
        );
        let r = recorder.snapshot(10);
        assert_eq!((r.operations, r.refused, r.failed), (1, 1, 0));
        assert_eq!(r.status_counts, BTreeMap::from([(200, 1), (400, 1)]));
        assert_eq!(
            r.all_status_counts,
            BTreeMap::from([(200, 1), (400, 1), (500, 1)])
        );
        assert_eq!(
            r.code_counts,
            BTreeMap::from([("insufficient_quantity".to_owned(), 1)])
        );
        assert_eq!(r.per_request["qty_delta"].count, 1, "2xx answers only");
        assert_eq!(r.latency.count, 1);
        assert_eq!(r.timeline[0].operations, 1);
        assert_eq!(r.timeline[1].operations, 0, "a refusal is not throughput");
    }

    #[tokio::test]
    async fn failed_operations_are_counted_by_code_but_are_neither_throughput_nor_latency() {
        // 95 % of the run answered 429 in microseconds: that must not read as a fast server.
        let start = Instant::now();
        let recorder = Recorder::new(start);
        for i in 0..100 {
            let (outcome, status, code) = if i < 95 {
                (Outcome::Failed, 429, Some("rate_limited"))
            } else {
                (Outcome::Succeeded, 200, None)
            };
            recorder.record(
                true,
                outcome,
                Duration::from_millis(if i < 95 { 1 } else { 50 }),
                start,
                &[sample(status, code)],
            );
        }
        let r = recorder.snapshot(1);
        assert_eq!((r.operations, r.refused, r.failed), (5, 0, 95));
        assert_eq!(r.latency.count, 5);
        assert!(r.latency.p50_us >= 49_000, "{:?}", r.latency);
        assert_eq!(r.code_counts["rate_limited"], 95);
        assert_eq!(r.status_counts[&429], 95);
        assert!((error_rate(&r) - 0.95).abs() < 1e-12);
        assert_eq!(error_rate(&Recorded::default()), 0.0);
    }

    #[test]
    fn an_operation_fails_on_any_answer_that_is_neither_2xx_nor_an_expected_refusal() {
        let refusal = |s: &Sample| s.code.as_deref() == Some("insufficient_quantity");
        let ok = sample(200, None);
        let refused = sample(400, Some("insufficient_quantity"));
        let limited = sample(429, Some("rate_limited"));
        let no_answer = sample(0, Some("transport_error"));
        assert_eq!(
            classify(std::slice::from_ref(&ok), refusal),
            Outcome::Succeeded
        );
        assert_eq!(classify(&[], refusal), Outcome::Succeeded);
        assert_eq!(
            classify(&[ok.clone(), refused.clone()], refusal),
            Outcome::Refused
        );
        assert_eq!(
            classify(&[refused.clone(), limited], refusal),
            Outcome::Failed
        );
        assert_eq!(classify(&[ok, no_answer], refusal), Outcome::Failed);
        assert_eq!(classify(&[refused], |_| false), Outcome::Failed);
    }

    #[tokio::test]
    async fn unsent_operations_are_failures_whose_wait_shows_in_the_latency() {
        let recorder = Recorder::new(Instant::now());
        recorder.record_unsent(Duration::from_secs(3));
        let r = recorder.snapshot(1);
        assert_eq!((r.operations, r.failed), (0, 1));
        assert!(r.latency.max_us >= 2_990_000, "{:?}", r.latency);
    }

    #[tokio::test]
    async fn every_second_of_the_window_has_a_timeline_point_even_a_stalled_one() {
        let start = Instant::now();
        let recorder = Recorder::new(start);
        for second in [0u64, 3, 7] {
            recorder.record(
                true,
                Outcome::Succeeded,
                Duration::from_millis(2),
                start + Duration::from_millis(second * 1000 + 500),
                &[sample(200, None)],
            );
        }
        let r = recorder.snapshot(5);
        let seconds: Vec<u64> = r.timeline.iter().map(|p| p.second).collect();
        assert_eq!(seconds, vec![0, 1, 2, 3, 4]);
        let ops: Vec<u64> = r.timeline.iter().map(|p| p.operations).collect();
        assert_eq!(ops, vec![1, 0, 0, 1, 0]);
        assert_eq!((r.timeline[1].p50_us, r.timeline[1].p99_us), (0, 0));
        // Completed after the window: in the totals, not in the timeline.
        assert_eq!(r.operations, 3);
    }
}
