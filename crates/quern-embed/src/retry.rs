//! Retrying transient embedding failures: exponential backoff with full jitter, a bounded total time, and the
//! provider's `Retry-After` honoured.
//!
//! The `backoff` crate is named only here: it is unmaintained upstream (RUSTSEC-2025-0012), so swapping it
//! (e.g. for `backon`) touches this file alone. Two of its behaviours are corrected here: its default would
//! retry for 15 minutes, and with a `Retry-After` it never consults the elapsed-time limit at all.

use std::future::Future;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use quern_core::ErrorClass;
use tokio::time::Instant;

use crate::EmbedError;

/// How one embedding request is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Upper bound of the first delay (the actual delay is uniform in 0..=bound: full jitter).
    pub initial_delay: Duration,
    /// Largest delay bound between two attempts.
    pub max_delay: Duration,
    /// Give up (and let the job-level retry take over) once this much time has passed.
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

/// Exponential bounds with a uniformly random delay below each: spreads the retries of many workers that
/// failed together (AWS's "full jitter").
struct FullJitter(ExponentialBackoff);

impl Backoff for FullJitter {
    fn reset(&mut self) {
        self.0.reset();
    }

    fn next_backoff(&mut self) -> Option<Duration> {
        self.0.next_backoff().map(|bound| bound.mul_f64(rand::random::<f64>()))
    }
}

/// Runs `op` until it succeeds, fails permanently, or the policy's time is up; returns the last error then.
/// A `Retry-After` from the provider replaces the computed delay, unless waiting it would pass the limit.
pub async fn retry_transient<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T, EmbedError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EmbedError>>,
{
    if policy.max_elapsed.is_zero() {
        return op().await;
    }
    let started = Instant::now();
    let backoff = FullJitter(
        ExponentialBackoffBuilder::new()
            .with_initial_interval(policy.initial_delay)
            .with_max_interval(policy.max_delay)
            .with_multiplier(2.0)
            .with_randomization_factor(0.0)
            .with_max_elapsed_time(Some(policy.max_elapsed))
            .build(),
    );
    let max_elapsed = policy.max_elapsed;
    backoff::future::retry_notify(
        backoff,
        || {
            let attempt = op();
            async move {
                attempt.await.map_err(|error| {
                    let remaining = max_elapsed.saturating_sub(started.elapsed());
                    match (error.class(), error.retry_after()) {
                        (ErrorClass::Permanent, _) => backoff::Error::Permanent(error),
                        // Waiting as asked would pass the limit: hand over to the job-level retry now.
                        (ErrorClass::Transient, Some(after)) if after >= remaining => backoff::Error::Permanent(error),
                        (ErrorClass::Transient, _) if remaining.is_zero() => backoff::Error::Permanent(error),
                        (ErrorClass::Transient, retry_after) => backoff::Error::Transient { err: error, retry_after },
                    }
                })
            }
        },
        |error: EmbedError, delay: Duration| {
            tracing::warn!(%error, delay_ms = delay.as_millis() as u64, "embedding request failed, retrying");
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn status(code: u16, retry_after: Option<Duration>) -> EmbedError {
        EmbedError::Status { status: code, message: String::new(), retry_after }
    }

    /// Calls `op` through the retry loop, failing with `errors` in turn, then succeeding.
    async fn run(policy: RetryPolicy, errors: Vec<EmbedError>) -> (Result<u32, EmbedError>, u32, Duration) {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let result = retry_transient(&policy, || {
            let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
            let outcome = errors.get(n).cloned().map_or(Ok(n as u32), Err);
            async move { outcome }
        })
        .await;
        (result, calls.load(Ordering::SeqCst), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success_within_the_delay_bounds() {
        let policy = RetryPolicy::default();
        let (result, calls, elapsed) = run(policy, vec![status(503, None), status(500, None), status(502, None)]).await;
        assert_eq!(result.expect("succeeds"), 3);
        assert_eq!(calls, 4);
        // Full jitter: each delay is at most its bound (100 ms, 200 ms, 400 ms).
        assert!(elapsed <= Duration::from_millis(700), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let (result, calls, _) = run(RetryPolicy::default(), vec![status(400, None)]).await;
        assert!(matches!(result, Err(EmbedError::Status { status: 400, .. })));
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let (result, calls, elapsed) =
            run(RetryPolicy::default(), vec![status(429, Some(Duration::from_secs(7)))]).await;
        assert!(result.is_ok());
        assert_eq!(calls, 2);
        assert!(elapsed >= Duration::from_secs(7) && elapsed < Duration::from_secs(8), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_time_is_bounded_even_when_the_provider_keeps_asking_to_wait() {
        let policy = RetryPolicy { max_elapsed: Duration::from_secs(10), ..RetryPolicy::default() };
        let throttles = vec![status(429, Some(Duration::from_secs(4))); 100];
        let (result, calls, elapsed) = run(policy, throttles).await;
        assert!(matches!(result, Err(EmbedError::Status { status: 429, .. })));
        assert_eq!(calls, 3, "waits 4 s twice, then a third wait would pass 10 s");
        assert!(elapsed <= Duration::from_secs(10));

        let failures = vec![status(503, None); 1000];
        let (result, _, elapsed) = run(policy, failures).await;
        assert!(result.is_err());
        assert!(elapsed <= Duration::from_secs(10) + policy.max_delay, "{elapsed:?}");
    }
}
