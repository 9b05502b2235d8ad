//! The time source. Transitions receive `now` as an argument so tests can control time
//! (deadlines, expiry) and both backends store the same instant.

use std::sync::Mutex;
use time::{Duration, OffsetDateTime};

/// Where "now" comes from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// Truncates to whole microseconds: PostgreSQL keeps microseconds, and an instant that
/// round-trips differently on the two backends would make them disagree.
pub fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let micros = t.microsecond();
    t.replace_nanosecond(micros * 1_000).unwrap_or(t)
}

/// The operating system's clock, in UTC, at microsecond precision.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        truncate_to_micros(OffsetDateTime::now_utc())
    }
}

/// A clock that only moves when told to (tests of deadlines and expiry).
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Mutex::new(truncate_to_micros(start)))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The system clock shifted by an adjustable offset: time flows normally (retries and
/// backoff work) and tests can still jump ahead (expiry, deadlines, lease takeover).
#[derive(Debug, Default)]
pub struct OffsetClock(Mutex<Duration>);

impl OffsetClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance(&self, by: Duration) {
        let mut offset = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *offset += by;
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> OffsetDateTime {
        let offset = *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        truncate_to_micros(OffsetDateTime::now_utc() + offset)
    }
}
