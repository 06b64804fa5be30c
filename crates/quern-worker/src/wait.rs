//! How start-up waits for a dependency (the database, the embedding API) and the broker loop for RabbitMQ:
//! growing, jittered pauses (`quern_core::backoff`), a log line per attempt naming what is missing and where, and
//! shutdown interrupting the wait at once.

use std::future::Future;
use std::time::Duration;

use quern_core::backoff::pause_text;
use quern_core::{Backoff, Jitter};
use tokio_util::sync::CancellationToken;

/// Pauses between two attempts to reach a dependency: from 0.5 s, doubling, at most 30 s. Half jitter: a fleet
/// restarted together does not knock on the same door in step, and no worker hammers a service that is down.
pub const DEPENDENCY_BACKOFF: Backoff =
    Backoff { initial_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30), jitter: Jitter::Half };

/// Why one attempt to reach a dependency failed.
#[derive(Debug)]
pub enum NotYet {
    /// Worth another try (the dependency is down, refuses us, or does not answer); the text says why, in a few
    /// words.
    Retry(String),
    /// No retry can fix it (e.g. a vector dimension that differs from the database's): start-up fails.
    Fatal(anyhow::Error),
}

/// Calls `attempt` until it succeeds, pausing as `backoff` says in between and logging each failure as
/// `waiting for {what}: {why}; next try in 4s`. `Ok(None)` when `shutdown` came first (it interrupts an attempt
/// or a pause at once); `Err` for a [`NotYet::Fatal`] failure.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    backoff: Backoff,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, NotYet>>,
{
    let mut pauses = backoff.pauses();
    let mut failed = 0u32;
    loop {
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(None),
            outcome = attempt() => outcome,
        };
        match outcome {
            Ok(value) => {
                if failed > 0 {
                    tracing::info!(attempts = failed + 1, "{what} answers");
                }
                return Ok(Some(value));
            }
            Err(NotYet::Fatal(error)) => return Err(error),
            Err(NotYet::Retry(why)) => {
                failed += 1;
                let pause = pauses.next_pause();
                tracing::warn!(attempt = failed, "waiting for {what}: {why}; next try in {}", pause_text(pause));
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shutdown does not wait for the pause, nor for an attempt that hangs. (The worker's tokio has no paused
    /// clock, so real time with a wide margin: the pause is 15-30 s, the cancel comes after 0.1 s.)
    #[tokio::test]
    async fn shutdown_interrupts_the_wait_at_once() {
        let shutdown = CancellationToken::new();
        let long = Backoff { initial_delay: Duration::from_secs(30), ..DEPENDENCY_BACKOFF };
        let waiting = wait_for("nothing", long, &shutdown, || async { Err::<(), _>(NotYet::Retry("down".into())) });
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            shutdown.cancel();
        };
        let both = async { tokio::join!(waiting, cancel) };
        let (waited, ()) = tokio::time::timeout(Duration::from_secs(5), both).await.expect("stopped when cancelled");
        assert!(waited.expect("no fatal error").is_none());

        let hanging = wait_for("nothing", DEPENDENCY_BACKOFF, &shutdown, std::future::pending::<Result<(), NotYet>>);
        assert!(hanging.await.expect("no fatal error").is_none());
    }

    #[tokio::test]
    async fn a_dependency_that_comes_back_ends_the_wait_and_a_fatal_failure_ends_it_with_the_error() {
        let shutdown = CancellationToken::new();
        let mut tries = 0;
        let quick = Backoff {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            jitter: Jitter::Half,
        };
        let answer = wait_for("a flaky thing", quick, &shutdown, || {
            tries += 1;
            let ready = tries >= 4;
            async move {
                if ready {
                    Ok(tries)
                } else {
                    Err(NotYet::Retry("not yet".into()))
                }
            }
        });
        assert_eq!(answer.await.expect("no fatal error"), Some(4));

        let fatal = wait_for("a broken thing", quick, &shutdown, || async {
            Err::<(), _>(NotYet::Fatal(anyhow::anyhow!("dimension 64, configured 32")))
        });
        assert_eq!(fatal.await.expect_err("fatal").to_string(), "dimension 64, configured 32");
    }
}
