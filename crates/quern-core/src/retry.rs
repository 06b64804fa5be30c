//! Job-level retry policy: how many failed attempts a job gets and how long it waits before each retry.
//!
//! A failed job is not requeued at once (a hot loop against a failing dependency); it waits in a delay queue
//! whose queue-level TTL sends it back to work. One queue per delay tier, because per-message TTLs in one
//! queue block each other (a message only expires at the head).

use std::time::Duration;

/// Default delay tiers: the n-th retry waits the n-th tier (the last tier repeats).
pub const DEFAULT_TIERS: [Duration; 4] =
    [Duration::from_secs(1), Duration::from_secs(10), Duration::from_secs(60), Duration::from_secs(300)];
/// Default number of failed attempts after which a job is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// How a job is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failed attempts after which the job goes to the dead-letter queue (at least 1).
    pub max_attempts: u32,
    /// Delay before retry n (1-based) is `delay_tiers[min(n, len) - 1]`; never empty.
    pub delay_tiers: Vec<Duration>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send the job to the delay queue of this tier.
    RetryAfter(Duration),
    /// Attempts are used up: dead-letter the job.
    GiveUp,
}

/// The tiers or attempt count make no sense.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetryPolicyError {
    /// No delay tiers were given.
    #[error("at least one retry delay tier is needed")]
    NoTiers,
    /// A tier of zero would requeue at once.
    #[error("retry delay tiers must be at least 1 ms")]
    ZeroTier,
    /// Zero attempts would never run a job.
    #[error("max attempts must be at least 1")]
    ZeroAttempts,
}

impl RetryPolicy {
    /// A checked policy.
    pub fn new(max_attempts: u32, delay_tiers: Vec<Duration>) -> Result<RetryPolicy, RetryPolicyError> {
        if max_attempts == 0 {
            return Err(RetryPolicyError::ZeroAttempts);
        }
        if delay_tiers.is_empty() {
            return Err(RetryPolicyError::NoTiers);
        }
        if delay_tiers.iter().any(|d| d.as_millis() == 0) {
            return Err(RetryPolicyError::ZeroTier);
        }
        Ok(RetryPolicy { max_attempts, delay_tiers })
    }

    /// The decision after `failed_attempts` failures (counting the one that just happened).
    pub fn decide(&self, failed_attempts: u32) -> RetryDecision {
        if failed_attempts >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let index = (failed_attempts.max(1) as usize - 1).min(self.delay_tiers.len() - 1);
        RetryDecision::RetryAfter(self.delay_tiers[index])
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: DEFAULT_MAX_ATTEMPTS, delay_tiers: DEFAULT_TIERS.to_vec() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_walked_then_the_last_repeats_until_attempts_run_out() {
        let policy = RetryPolicy::new(5, vec![Duration::from_secs(1), Duration::from_secs(10)]).expect("valid");
        assert_eq!(policy.decide(1), RetryDecision::RetryAfter(Duration::from_secs(1)));
        assert_eq!(policy.decide(2), RetryDecision::RetryAfter(Duration::from_secs(10)));
        assert_eq!(policy.decide(4), RetryDecision::RetryAfter(Duration::from_secs(10)));
        assert_eq!(policy.decide(5), RetryDecision::GiveUp);
        assert_eq!(policy.decide(50), RetryDecision::GiveUp);
    }

    #[test]
    fn the_default_follows_the_documented_tiers() {
        let policy = RetryPolicy::default();
        let delays: Vec<_> = (1..5).map(|n| policy.decide(n)).collect();
        assert_eq!(delays, DEFAULT_TIERS.iter().map(|d| RetryDecision::RetryAfter(*d)).collect::<Vec<_>>());
        assert_eq!(policy.decide(5), RetryDecision::GiveUp);
    }

    #[test]
    fn a_single_attempt_policy_never_retries() {
        let policy = RetryPolicy::new(1, vec![Duration::from_secs(1)]).expect("valid");
        assert_eq!(policy.decide(1), RetryDecision::GiveUp);
    }

    #[test]
    fn nonsense_is_refused() {
        assert_eq!(RetryPolicy::new(0, vec![Duration::from_secs(1)]), Err(RetryPolicyError::ZeroAttempts));
        assert_eq!(RetryPolicy::new(3, vec![]), Err(RetryPolicyError::NoTiers));
        assert_eq!(RetryPolicy::new(3, vec![Duration::ZERO]), Err(RetryPolicyError::ZeroTier));
    }
}
