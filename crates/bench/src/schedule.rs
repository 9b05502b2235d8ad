//! The open-loop arrival schedule: request `i` is *intended* at `start + i / rate`.
//!
//! Offsets are computed from `i` each time, never by adding a period repeatedly, so a rate
//! whose period is not a whole number of nanoseconds does not drift over a long run. The
//! latency of request `i` is measured from its intended time, whatever delayed its sending
//! (a full in-flight window, a busy client): that is what keeps coordinated omission out of
//! the figures.

use std::time::Duration;

/// A request sent more than this after its intended time counts as late (the tokio timer
/// itself has a 1 ms resolution, so anything below is noise).
pub const LATE_AFTER: Duration = Duration::from_millis(5);
/// The highest `--rate`: one request every 100 ns, far beyond what one client process can
/// send. Above ~1e9/s consecutive requests would round to the same nanosecond and
/// [`Schedule::due_before`] would step through them one by one for ever.
pub const RATE_MAX: f64 = 1e7;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate_per_s: f64,
}

impl Schedule {
    pub fn new(rate_per_s: f64) -> Result<Self, String> {
        if !rate_per_s.is_finite() || rate_per_s <= 0.0 {
            return Err(format!(
                "--rate must be a positive number, got {rate_per_s}"
            ));
        }
        if rate_per_s > RATE_MAX {
            return Err(format!(
                "--rate {rate_per_s} is above the tool's limit of {RATE_MAX}/s (one request \
                 every 100 ns)"
            ));
        }
        Ok(Self { rate_per_s })
    }

    pub fn rate_per_s(&self) -> f64 {
        self.rate_per_s
    }

    /// When request `i` (0-based) should be sent, from the start of the run.
    pub fn offset(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * 1e9 / self.rate_per_s).round() as u64)
    }

    /// How many requests are intended strictly before `elapsed`.
    pub fn due_before(&self, elapsed: Duration) -> u64 {
        // Estimate, then correct for floating-point rounding at the boundaries.
        let mut n = (elapsed.as_secs_f64() * self.rate_per_s).ceil().max(0.0) as u64;
        while n > 0 && self.offset(n - 1) >= elapsed {
            n -= 1;
        }
        while self.offset(n) < elapsed {
            n += 1;
        }
        n
    }

    /// The first request index intended at or after `elapsed` (e.g. the end of the warm-up).
    pub fn first_at_or_after(&self, elapsed: Duration) -> u64 {
        self.due_before(elapsed)
    }
}

/// Whether a request sent `sent_after_intended` after its intended time counts as late.
pub fn is_late(sent_after_intended: Duration) -> bool {
    sent_after_intended > LATE_AFTER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spaced_by_the_period() {
        let s = Schedule::new(1000.0).unwrap();
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(1));
        assert_eq!(s.offset(1500), Duration::from_millis(1500));
    }

    #[test]
    fn a_period_that_is_not_whole_nanoseconds_does_not_drift() {
        // 1/3 s is 333,333,333.3 ns: adding it repeatedly would lose 1 ns every 3 requests.
        let s = Schedule::new(3.0).unwrap();
        assert_eq!(s.offset(3), Duration::from_secs(1));
        assert_eq!(s.offset(3_000_000), Duration::from_secs(1_000_000));
    }

    #[test]
    fn due_before_counts_intended_times_strictly_before_the_instant() {
        let s = Schedule::new(10.0).unwrap(); // every 100 ms
        assert_eq!(s.due_before(Duration::ZERO), 0);
        assert_eq!(s.due_before(Duration::from_millis(1)), 1);
        assert_eq!(s.due_before(Duration::from_millis(100)), 1);
        assert_eq!(s.due_before(Duration::from_millis(101)), 2);
        assert_eq!(s.due_before(Duration::from_secs(10)), 100);
        // The warm-up boundary: request 50 is the first one measured after 5 s.
        assert_eq!(s.first_at_or_after(Duration::from_secs(5)), 50);
        assert_eq!(s.offset(50), Duration::from_secs(5));
    }

    #[test]
    fn due_before_agrees_with_offset_for_awkward_rates() {
        for rate in [0.7, 3.0, 333.3, 1234.5, 99_999.0] {
            let s = Schedule::new(rate).unwrap();
            for ms in [0u64, 1, 7, 999, 1000, 12_345] {
                let t = Duration::from_millis(ms);
                let n = s.due_before(t);
                assert!(n == 0 || s.offset(n - 1) < t, "rate {rate} t {ms}");
                assert!(s.offset(n) >= t, "rate {rate} t {ms}");
            }
        }
    }

    #[test]
    fn non_positive_or_infinite_rates_are_refused() {
        assert!(Schedule::new(0.0).is_err());
        assert!(Schedule::new(-5.0).is_err());
        assert!(Schedule::new(f64::INFINITY).is_err());
        assert!(Schedule::new(f64::NAN).is_err());
        assert!(
            Schedule::new(1e18)
                .unwrap_err()
                .contains("above the tool's limit")
        );
    }

    #[test]
    fn due_before_stays_exact_at_the_highest_rate_over_a_long_window() {
        let s = Schedule::new(RATE_MAX).unwrap();
        let t = Duration::from_secs(3600) + Duration::from_nanos(50);
        let n = s.due_before(t);
        assert_eq!(n, 36_000_000_001);
        assert!(s.offset(n - 1) < t && s.offset(n) >= t);
    }

    #[test]
    fn lateness_has_a_threshold_above_timer_noise() {
        assert!(!is_late(Duration::from_millis(1)));
        assert!(is_late(Duration::from_millis(6)));
    }
}
