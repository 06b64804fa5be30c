//! Riding out a restart of RabbitMQ or Postgres: an operation is tried again after growing, jittered pauses
//! (`quern_core::backoff`) while its error says retrying can help, until a deadline the operator chose. Each attempt
//! is also cut off at the deadline, so a service that accepts connections but never answers cannot hold the command
//! past it.

use std::future::Future;
use std::time::Duration;

use quern_core::{Backoff, ErrorClass};
use tokio::time::Instant;

/// Why [`until_deadline`] stopped without a value.
#[derive(Debug)]
pub enum GaveUp<E> {
    /// The error says retrying cannot help.
    Permanent(E),
    /// The deadline came (or the next delay would have passed it); the last error seen, if an attempt failed
    /// rather than went unanswered.
    TimedOut(Option<E>),
}

/// Runs `attempt` until it succeeds, fails with an error `class` calls permanent, or `deadline` passes.
/// `on_retry` hears each transient error with the delay before the next attempt (to tell the operator).
pub async fn until_deadline<T, E, F, Fut>(
    deadline: Instant,
    backoff: Backoff,
    mut attempt: F,
    class: impl Fn(&E) -> ErrorClass,
    mut on_retry: impl FnMut(&E, Duration),
) -> Result<T, GaveUp<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pauses = backoff.pauses();
    let mut last = None;
    loop {
        let error = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error,
            Err(_) => return Err(GaveUp::TimedOut(last)),
        };
        if class(&error) == ErrorClass::Permanent {
            return Err(GaveUp::Permanent(error));
        }
        let delay = pauses.next_pause();
        // Sleeping past the deadline only to make an attempt it would cut off at once: give up now instead.
        if Instant::now() + delay >= deadline {
            return Err(GaveUp::TimedOut(Some(error)));
        }
        on_retry(&error, delay);
        last = Some(error);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    //! On the real clock with delays of milliseconds (the CLI's tokio lacks `test-util` for a paused clock); the
    //! timing assertions leave room for a busy machine.

    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial_delay: Duration::from_millis(4),
        max_delay: Duration::from_millis(32),
        jitter: quern_core::Jitter::Full,
    };
    /// Lateness a loaded machine may add to a timer.
    const SLACK: Duration = Duration::from_secs(2);

    #[derive(Debug, PartialEq)]
    enum Fake {
        Down,
        Refused,
    }

    fn class(error: &Fake) -> ErrorClass {
        match error {
            Fake::Down => ErrorClass::Transient,
            Fake::Refused => ErrorClass::Permanent,
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_with_growing_jittered_delays_until_success() {
        let calls = AtomicU32::new(0);
        let mut delays = Vec::new();
        let result = until_deadline(
            Instant::now() + Duration::from_secs(60),
            BACKOFF,
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 6 {
                        Err(Fake::Down)
                    } else {
                        Ok(n)
                    }
                }
            },
            class,
            |_, delay| delays.push(delay),
        )
        .await;
        assert_eq!(result.expect("succeeds"), 6);
        let bounds_ms = [4, 8, 16, 32, 32, 32];
        assert_eq!(delays.len(), bounds_ms.len());
        for (delay, bound) in delays.iter().zip(bounds_ms) {
            assert!(*delay <= Duration::from_millis(bound), "{delay:?} above its bound {bound} ms");
        }
        assert!(delays.windows(2).any(|pair| pair[0] != pair[1]), "jittered: {delays:?}");
    }

    #[tokio::test]
    async fn a_permanent_error_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = until_deadline(
            Instant::now() + Duration::from_secs(60),
            BACKOFF,
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(if n == 0 { Fake::Down } else { Fake::Refused }) }
            },
            class,
            |_, _| {},
        )
        .await;
        assert!(matches!(result, Err(GaveUp::Permanent(Fake::Refused))), "{result:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_deadline_bounds_an_outage_and_an_attempt_that_never_answers() {
        let window = Duration::from_millis(300);
        let started = Instant::now();
        let down: Result<(), _> =
            until_deadline(started + window, BACKOFF, || async { Err(Fake::Down) }, class, |_, _| {}).await;
        assert!(matches!(down, Err(GaveUp::TimedOut(Some(Fake::Down)))), "{down:?}");
        let elapsed = started.elapsed();
        assert!(elapsed >= window - BACKOFF.max_delay && elapsed < window + SLACK, "{elapsed:?}");

        let started = Instant::now();
        let calls = AtomicU32::new(0);
        let hung: Result<(), _> = until_deadline(
            started + window,
            BACKOFF,
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        return Err(Fake::Down);
                    }
                    std::future::pending().await
                }
            },
            class,
            |_, _| {},
        )
        .await;
        assert!(matches!(hung, Err(GaveUp::TimedOut(Some(Fake::Down)))), "the last error is kept: {hung:?}");
        let elapsed = started.elapsed();
        assert!(elapsed >= window && elapsed < window + SLACK, "cut off at the deadline: {elapsed:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
