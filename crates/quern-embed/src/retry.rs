//! Retrying transient embedding failures with exponential backoff.
//!
//! The `backoff` crate is named only here: it is unmaintained upstream (RUSTSEC-2025-0012), so swapping it
//! (e.g. for `backon`) touches this file alone. Its default would retry for 15 minutes; the policy always
//! bounds the total time.

use std::future::Future;
use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use quern_core::ErrorClass;

use crate::EmbedError;

/// How one embedding request is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Largest delay between two attempts.
    pub max_delay: Duration,
    /// Give up (and let the job-level retry take over) after this long in total.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all: the first failure is returned.
    pub fn none() -> RetryPolicy {
        RetryPolicy { initial_delay: Duration::ZERO, max_delay: Duration::ZERO, max_elapsed: Duration::ZERO }
    }
}

/// Runs `op` until it succeeds, fails permanently, or the policy's time is up.
/// A `Retry-After` from the provider replaces the computed delay.
pub async fn retry_transient<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T, EmbedError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EmbedError>>,
{
    if policy.max_elapsed.is_zero() {
        return op().await;
    }
    let backoff = ExponentialBackoffBuilder::new()
        .with_initial_interval(policy.initial_delay)
        .with_max_interval(policy.max_delay)
        .with_multiplier(2.0)
        // Spread retries of many workers hitting the same provider.
        .with_randomization_factor(0.5)
        .with_max_elapsed_time(Some(policy.max_elapsed))
        .build();
    backoff::future::retry_notify(
        backoff,
        || {
            let attempt = op();
            async move {
                attempt.await.map_err(|error| match error.class() {
                    ErrorClass::Transient => backoff::Error::Transient { retry_after: error.retry_after(), err: error },
                    ErrorClass::Permanent => backoff::Error::Permanent(error),
                })
            }
        },
        |error: EmbedError, delay: Duration| {
            tracing::warn!(%error, delay_ms = delay.as_millis() as u64, "embedding request failed, retrying");
        },
    )
    .await
}
