//! The embedding semaphore of a process: a fixed number of permits, or as many as the adaptive limit allows.
//!
//! With the adaptive limit, the permits in existence (held plus available) follow it: growing adds permits;
//! shrinking forgets the available ones at once and the held ones as they come back, until no more exist than
//! the limit allows. Nothing polls or sleeps: every change happens when an answer arrives or a permit returns.

use std::sync::{Arc, Mutex, MutexGuard};

use quern_core::metric_names;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::limit::{AdaptiveLimit, Attempt, AttemptOutcome};

/// The process-wide pool of embedding permits.
#[derive(Debug)]
pub(crate) struct Permits {
    semaphore: Arc<Semaphore>,
    max: usize,
    adaptive: Option<Mutex<Adaptive>>,
}

/// The limit and how many permits exist right now (above the limit while held ones have not come back).
#[derive(Debug)]
struct Adaptive {
    limit: AdaptiveLimit,
    existing: usize,
}

/// A place in the pool; given back, or forgotten if the limit shrank, when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    permits: Arc<Permits>,
}

impl Permits {
    /// `max` permits, or with `adaptive` a limit starting lower that moves between 1 and `max`.
    pub(crate) fn new(max: usize, adaptive: bool) -> Arc<Permits> {
        let max = max.max(1);
        let adaptive = adaptive.then(|| AdaptiveLimit::new(max));
        let initial = adaptive.as_ref().map_or(max, AdaptiveLimit::current);
        metrics::gauge!(metric_names::EMBEDDING_PERMITS).set(max as f64);
        metrics::gauge!(metric_names::EMBEDDING_CONCURRENCY_LIMIT).set(initial as f64);
        Arc::new(Permits {
            semaphore: Arc::new(Semaphore::new(initial)),
            max,
            adaptive: adaptive.map(|limit| Mutex::new(Adaptive { limit, existing: initial })),
        })
    }

    /// Whether the limit adapts (and requests give their permit back while they wait to retry).
    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    /// Waits for a place.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Permit, AcquireError> {
        let permit = self.semaphore.clone().acquire_owned().await?;
        let permit = Permit { permit: Some(permit), permits: Arc::clone(self) };
        self.record_in_use();
        Ok(permit)
    }

    /// Requests allowed in flight now.
    #[cfg(test)]
    fn limit(&self) -> usize {
        self.adaptive.as_ref().map_or(self.max, |adaptive| lock(adaptive).limit.current())
    }

    /// Permits held now.
    pub(crate) fn in_use(&self) -> usize {
        let existing = self.adaptive.as_ref().map_or(self.max, |adaptive| lock(adaptive).existing);
        existing.saturating_sub(self.semaphore.available_permits())
    }

    /// Feeds one attempt's answer to the adaptive limit (nothing to do for a fixed pool) and makes the
    /// semaphore follow the limit.
    pub(crate) fn observe(&self, started: Instant, outcome: AttemptOutcome) {
        let Some(adaptive) = &self.adaptive else { return };
        let mut adaptive = lock(adaptive);
        let in_flight = adaptive.existing.saturating_sub(self.semaphore.available_permits());
        let attempt = Attempt { started, finished: Instant::now(), outcome, in_flight };
        let Some(change) = adaptive.limit.observe(attempt) else { return };
        if change.to > adaptive.existing {
            self.semaphore.add_permits(change.to - adaptive.existing);
            adaptive.existing = change.to;
        } else {
            adaptive.existing -= self.semaphore.forget_permits(adaptive.existing - change.to);
        }
        // Set under the lock, so two changes close together cannot leave the older value showing.
        metrics::gauge!(metric_names::EMBEDDING_CONCURRENCY_LIMIT).set(change.to as f64);
        drop(adaptive);
        // Cuts are rare and worth seeing; raises come every round trip while the limit grows, so they are debug.
        if change.to < change.from {
            tracing::info!(from = change.from, to = change.to, ?outcome, "embedding concurrency limit cut");
        } else {
            tracing::debug!(from = change.from, to = change.to, "embedding concurrency limit raised");
        }
    }

    fn record_in_use(&self) {
        metrics::gauge!(metric_names::EMBEDDING_PERMITS_IN_USE).set(self.in_use() as f64);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        match &self.permits.adaptive {
            Some(adaptive) => {
                let mut adaptive = lock(adaptive);
                if adaptive.existing > adaptive.limit.current() {
                    permit.forget();
                    adaptive.existing -= 1;
                } else {
                    drop(permit);
                }
            }
            None => drop(permit),
        }
        self.permits.record_in_use();
    }
}

/// The state stays consistent across a panic elsewhere (every change is a few integer updates), so a poisoned
/// lock is used as it is.
fn lock(adaptive: &Mutex<Adaptive>) -> MutexGuard<'_, Adaptive> {
    adaptive.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_fixed_pool_has_max_permits_and_ignores_answers() {
        let permits = Permits::new(3, false);
        let held: Vec<Permit> = futures::future::join_all((0..3).map(|_| permits.acquire()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for _ in 0..10 {
            permits.observe(Instant::now(), AttemptOutcome::Overloaded);
        }
        assert_eq!((permits.limit(), permits.in_use()), (3, 3));
        drop(held);
        assert_eq!(permits.semaphore.available_permits(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_semaphore_shrinks_as_permits_come_back_and_grows_at_once() {
        let permits = Permits::new(16, true);
        assert_eq!(permits.limit(), 4);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(permits.acquire().await.expect("open"));
        }
        let fifth = tokio::time::timeout(Duration::from_millis(20), permits.acquire()).await;
        assert!(fifth.is_err(), "the limit holds the fifth request back");

        let sent = Instant::now();
        permits.observe(sent, AttemptOutcome::Overloaded);
        assert_eq!((permits.limit(), permits.in_use()), (2, 4));
        held.pop();
        assert_eq!(permits.semaphore.available_permits(), 0, "a returned permit is forgotten while above the limit");
        held.pop();
        assert_eq!(permits.semaphore.available_permits(), 0);
        held.pop();
        assert_eq!(permits.semaphore.available_permits(), 1, "at the limit, permits are given back again");
        assert_eq!(permits.in_use(), 1);

        // Two answers to requests sent after the cut, with the limit in use, raise it to 3: one permit more.
        let after_cut = Instant::now();
        let _second = permits.acquire().await.expect("open");
        permits.observe(after_cut, AttemptOutcome::Answered);
        permits.observe(after_cut, AttemptOutcome::Answered);
        assert_eq!(permits.limit(), 3);
        assert_eq!(permits.semaphore.available_permits(), 1);
        drop(held);
        assert_eq!(permits.semaphore.available_permits(), 2);
    }

    #[tokio::test]
    async fn a_cut_forgets_available_permits_at_once() {
        let permits = Permits::new(16, true);
        permits.observe(Instant::now(), AttemptOutcome::Overloaded);
        assert_eq!(permits.semaphore.available_permits(), 2);
        assert_eq!(permits.in_use(), 0);
    }
}
