//! Delivery workers: the outbox relay (event log, NATS JetStream) and webhook deliveries.
//!
//! Guarantees: every committed change has an outbox row (same transaction); the relay
//! publishes rows per organization in sequence order, and marks them only after the
//! destination acknowledged; a crash between publish and mark republishes, and destinations
//! deduplicate by event id (the event log by id, JetStream by `Nats-Msg-Id`, webhook
//! receivers by the `Trueline-Event-Id` header). Delivery is at-least-once; the effect is
//! exactly-once for consumers that deduplicate.

pub mod nats;
pub mod relay;
pub mod webhooks;

use std::time::Duration;

/// Exponential backoff with jitter: between half and all of `base * 2^(attempt-1)` capped
/// at `max`. (The jitter is applied below the cap: jitter around it put half of the capped
/// retries exactly on `max`, together.)
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(max);
    // Jitter from the clock's nanoseconds: cheap, and good enough to spread retries.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.5 + f64::from(nanos % 1000) / 2000.0;
    capped.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 1..=12 {
            let b = backoff(attempt, base, max);
            let nominal = base.saturating_mul(1 << (attempt - 1)).min(max);
            assert!(
                b >= nominal.mul_f64(0.5) && b < nominal,
                "attempt {attempt}: {b:?}"
            );
        }
        assert!(backoff(30, base, max) <= max);
    }
}
