//! Retrying transient embedding failures: growing pauses with full jitter (`quern_core::backoff`), a bounded total
//! time, and the provider's `Retry-After` honoured unless waiting it would pass that bound. A timeout is not
//! retried here: the provider still computes the request we gave up on, so the pool resends it only once the
//! provider has worked off what it held (`request.rs`).

use std::future::Future;
use std::time::Duration;

use quern_core::{Backoff, ErrorClass, Jitter};
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

/// Runs `op` until it succeeds, fails permanently or times out, or the policy's time is up; returns the last
/// error then. A `Retry-After` from the provider replaces the computed delay, unless waiting it would pass the
/// limit.
pub async fn retry_transient<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T, EmbedError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EmbedError>>,
{
    let started = Instant::now();
    // Full jitter: many workers whose requests failed together spread their retries the most.
    let mut pauses =
        Backoff { initial_delay: policy.initial_delay, max_delay: policy.max_delay, jitter: Jitter::Full }.pauses();
    loop {
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if error.class() == ErrorClass::Permanent || matches!(error, EmbedError::Timeout(_)) {
            return Err(error);
        }
        let remaining = policy.max_elapsed.saturating_sub(started.elapsed());
        let pause = error.retry_after().unwrap_or_else(|| pauses.next_pause());
        // Waiting would pass the limit: hand over to the job-level retry now.
        if pause >= remaining {
            return Err(error);
        }
        tracing::warn!(%error, delay_ms = pause.as_millis() as u64, "embedding request failed, retrying");
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn status(code: u16, retry_after: Option<Duration>) -> EmbedError {
        EmbedError::Status { status: code, message: String::new(), param: None, code: None, retry_after }
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
    async fn timeouts_are_left_to_the_pool() {
        let (result, calls, _) = run(RetryPolicy::default(), vec![EmbedError::Timeout(Duration::from_secs(30))]).await;
        assert!(matches!(result, Err(EmbedError::Timeout(_))));
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
