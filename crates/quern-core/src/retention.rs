//! How long a job's message can still arrive, and so how long a deleted document's tombstone must be kept.
//!
//! A deleted document leaves its version behind in `quern_document_heads` (a tombstone), so that a job older than
//! the delete, arriving late, is recognised as superseded instead of bringing the document back. Once no such job
//! can arrive, the tombstone can go. Outside a replay from the dead-letter queue, a job's message lives at most:
//!
//! - `max_attempts` attempts, each of which the broker may deliver `delivery_limit + 1` times (a delivery whose
//!   worker dies or loses its channel comes back; a quorum queue dead-letters it past `x-delivery-limit`), each
//!   delivery held at most the broker's `consumer_timeout` (RabbitMQ closes the channel of a consumer holding a
//!   message longer);
//! - plus the retry delays between attempts (retry n waits tier n, the last tier repeating);
//! - plus the time it waited in the work queue before its first delivery, which nothing bounds: a backlog, or an
//!   embedding provider that refuses every request (jobs are given back without using up an attempt, and the
//!   workers take none meanwhile). [`QUEUE_WAIT_ALLOWANCE`] stands for it.
//!
//! With the defaults (5 attempts, tiers 1s,10s,60s,5m, a delivery limit of 20, a 30 minute consumer timeout) that
//! is 5 × 21 × 30 min + 6 min 11 s + 24 h = 76 h 36 min 11 s. A job older than the horizon is not lost when it does
//! arrive: a write that could resurrect a pruned document is refused as stale and dead-lettered (see
//! `quern_store::retention`), so too short a horizon costs a dead letter to look at, never a wrong document.

use std::time::Duration;

use crate::RetryPolicy;

/// RabbitMQ's default `consumer_timeout`: a consumer holding a delivery longer loses its channel, and the message
/// is delivered again.
pub const BROKER_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What the tombstone horizon allows for a job's wait in the work queue before its first delivery: a backlog or a
/// provider outage a day long is an incident someone is working on, and the workers keep draining meanwhile.
pub const QUEUE_WAIT_ALLOWANCE: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest a job's message can be in flight once first delivered: every attempt delivered `delivery_limit + 1`
/// times and held `consumer_timeout` each time, plus the retry delays between attempts.
pub fn in_flight_bound(retry: &RetryPolicy, delivery_limit: u32, consumer_timeout: Duration) -> Duration {
    let deliveries = retry.max_attempts.max(1).saturating_mul(delivery_limit.saturating_add(1));
    let held = consumer_timeout.saturating_mul(deliveries);
    // Retry n (1-based, up to max_attempts - 1) waits tier n; past the last tier, the last one again.
    let retries = retry.max_attempts.saturating_sub(1) as usize;
    let walked = retries.min(retry.delay_tiers.len());
    let first = retry.delay_tiers[..walked].iter().fold(Duration::ZERO, |total, tier| total.saturating_add(*tier));
    let repeats = u32::try_from(retries - walked).unwrap_or(u32::MAX);
    let last = retry.delay_tiers.last().copied().unwrap_or_default();
    held.saturating_add(first).saturating_add(last.saturating_mul(repeats))
}

/// How long a tombstone is kept by default: [`in_flight_bound`] with RabbitMQ's default consumer timeout, plus
/// [`QUEUE_WAIT_ALLOWANCE`]. See the module documentation for the reasoning.
pub fn tombstone_horizon(retry: &RetryPolicy, delivery_limit: u32) -> Duration {
    in_flight_bound(retry, delivery_limit, BROKER_CONSUMER_TIMEOUT).saturating_add(QUEUE_WAIT_ALLOWANCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_default_horizon_is_the_documented_sum() {
        let horizon = tombstone_horizon(&RetryPolicy::default(), 20);
        let expected = MINUTE * 30 * 5 * 21 + Duration::from_secs(1 + 10 + 60 + 300) + QUEUE_WAIT_ALLOWANCE;
        assert_eq!(horizon, expected);
        assert_eq!(horizon, Duration::from_secs(76 * 3600 + 36 * 60 + 11));
    }

    #[test]
    fn the_last_tier_repeats_for_the_remaining_retries() {
        let policy = RetryPolicy::new(6, vec![Duration::from_secs(1), Duration::from_secs(100)]).expect("valid");
        // Retries 1..=5 wait 1, 100, 100, 100, 100 seconds; no delivery limit means one delivery per attempt.
        let bound = in_flight_bound(&policy, 0, MINUTE);
        assert_eq!(bound, MINUTE * 6 + Duration::from_secs(401));
    }

    #[test]
    fn a_single_attempt_has_no_retry_delay() {
        let policy = RetryPolicy::new(1, vec![Duration::from_secs(3600)]).expect("valid");
        assert_eq!(in_flight_bound(&policy, 20, MINUTE), MINUTE * 21);
    }

    #[test]
    fn a_longer_policy_never_shortens_the_horizon() {
        let base = RetryPolicy::default();
        let more_attempts = RetryPolicy { max_attempts: 8, ..base.clone() };
        let longer_tiers = RetryPolicy { delay_tiers: vec![Duration::from_secs(3600)], ..base.clone() };
        assert!(tombstone_horizon(&more_attempts, 20) > tombstone_horizon(&base, 20));
        assert!(tombstone_horizon(&longer_tiers, 20) > tombstone_horizon(&base, 20));
        assert!(tombstone_horizon(&base, 30) > tombstone_horizon(&base, 20));
    }

    #[test]
    fn absurd_settings_saturate_instead_of_overflowing() {
        let policy = RetryPolicy::new(u32::MAX, vec![Duration::MAX]).expect("valid");
        assert_eq!(tombstone_horizon(&policy, u32::MAX), Duration::MAX);
    }
}
