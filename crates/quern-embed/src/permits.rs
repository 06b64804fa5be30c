//! The embedding semaphore of a process: a fixed number of permits, or as many as the adaptive limit allows.
//!
//! With the adaptive limit, the permits in existence (held plus available) follow it: growing adds permits;
//! shrinking forgets the available ones at once and the held ones as they come back, until no more exist than
//! the limit allows. Nothing polls or sleeps: every change happens when an answer arrives or a permit returns.
//!
//! It also knows what the provider has worked off: the latest send time of an answered request, which tells a
//! timed-out request when resending it adds no queue (`pool.rs`), and a refusal whether the provider took our
//! settings since (`provider.rs`).

use std::sync::{Arc, Mutex, MutexGuard};

use quern_core::metric_names;
use tokio::sync::{AcquireError, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::limit::{AdaptiveLimit, Attempt, AttemptOutcome};

/// The process-wide pool of embedding permits.
#[derive(Debug)]
pub(crate) struct Permits {
    semaphore: Arc<Semaphore>,
    max: usize,
    adaptive: Option<Mutex<Adaptive>>,
    /// When the latest request that got embeddings back was sent.
    answered_sent: Mutex<Option<Instant>>,
    /// Woken on every answer and every permit returned.
    changed: Notify,
    /// Requests sent and not yet answered. Not the permits held: a permit is taken before its batch is packed,
    /// and batches packed one after the other may leave in either order.
    departed: std::sync::atomic::AtomicUsize,
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

/// A request on its way to the provider and back, counted while it is.
#[derive(Debug)]
pub(crate) struct Departure<'a> {
    permits: &'a Permits,
    alone: bool,
}

impl Departure<'_> {
    /// Whether nothing else of ours was at the provider when it left (so nothing of ours was queued ahead).
    pub(crate) fn alone(&self) -> bool {
        self.alone
    }
}

impl Drop for Departure<'_> {
    fn drop(&mut self) {
        self.permits.departed.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
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
            answered_sent: Mutex::new(None),
            changed: Notify::new(),
            departed: std::sync::atomic::AtomicUsize::new(0),
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
    pub(crate) fn limit(&self) -> usize {
        self.adaptive.as_ref().map_or(self.max, |adaptive| lock(adaptive).limit.current())
    }

    /// Permits held now.
    pub(crate) fn in_use(&self) -> usize {
        let existing = self.adaptive.as_ref().map_or(self.max, |adaptive| lock(adaptive).existing);
        existing.saturating_sub(self.semaphore.available_permits())
    }

    /// Counts a request leaving for the provider until the returned value drops (when its answer is in).
    pub(crate) fn depart(&self) -> Departure<'_> {
        let before = self.departed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Departure { permits: self, alone: before == 0 }
    }

    /// Whether a request sent at or after `sent` got embeddings back: the provider took our settings since.
    pub(crate) fn answered_since(&self, sent: Instant) -> bool {
        lock(&self.answered_sent).is_some_and(|answered| answered >= sent)
    }

    /// Waits until the provider has answered a request sent at or after `sent`, or nothing of ours is in
    /// flight. A provider works its queue in order, so either way what it held from us when `sent` went out
    /// has been worked off, including a request we gave up waiting for.
    pub(crate) async fn worked_off(&self, sent: Instant) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.answered_since(sent) || self.in_use() == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Notes that a request sent at `sent` got embeddings back.
    pub(crate) fn note_answered(&self, sent: Instant) {
        {
            let mut answered = lock(&self.answered_sent);
            if answered.is_none_or(|latest| latest < sent) {
                *answered = Some(sent);
            }
        }
        self.changed.notify_waiters();
    }

    /// Feeds one attempt's answer to the adaptive limit (nothing to do for a fixed pool) and makes the
    /// semaphore follow the limit. `alone` and `tokens` are the attempt's (see [`Attempt`]).
    pub(crate) fn observe(&self, started: Instant, outcome: AttemptOutcome, alone: bool, tokens: usize) {
        if outcome == AttemptOutcome::Answered {
            self.note_answered(started);
        } else {
            self.changed.notify_waiters();
        }
        let Some(adaptive) = &self.adaptive else { return };
        let mut adaptive = lock(adaptive);
        let in_flight = adaptive.existing.saturating_sub(self.semaphore.available_permits());
        let attempt = Attempt { started, finished: Instant::now(), outcome, in_flight, alone, tokens };
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
        // Cuts are rare and worth seeing; raises come every round trip while the limit grows, so they are debug,
        // and so is a queueing cut of one step: against a provider serving one request at a time, a probe of
        // 2 ends that way every ninth answer.
        let probe_ended = outcome == AttemptOutcome::Answered && change.from == change.to + 1;
        if change.to < change.from && !probe_ended {
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
        self.permits.changed.notify_waiters();
    }
}

/// The state stays consistent across a panic elsewhere (every change is a few integer updates), so a poisoned
/// lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TOKENS: usize = 8000;

    #[tokio::test]
    async fn a_fixed_pool_has_max_permits_and_ignores_answers() {
        let permits = Permits::new(3, false);
        let held: Vec<Permit> = futures::future::join_all((0..3).map(|_| permits.acquire()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for _ in 0..10 {
            permits.observe(Instant::now(), AttemptOutcome::Overloaded, false, TOKENS);
        }
        assert_eq!((permits.limit(), permits.in_use()), (3, 3));
        drop(held);
        assert_eq!(permits.semaphore.available_permits(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_semaphore_shrinks_as_permits_come_back_and_grows_at_once() {
        let permits = Permits::new(16, true);
        assert_eq!(permits.limit(), 2);
        let mut held = vec![permits.acquire().await.expect("open"), permits.acquire().await.expect("open")];
        // Two answers with the limit in use: slow start raises it to 4, two permits more at once.
        permits.observe(Instant::now(), AttemptOutcome::Answered, false, TOKENS);
        permits.observe(Instant::now(), AttemptOutcome::Answered, false, TOKENS);
        assert_eq!(permits.limit(), 4);
        for _ in 0..2 {
            held.push(permits.acquire().await.expect("open"));
        }
        let fifth = tokio::time::timeout(Duration::from_millis(20), permits.acquire()).await;
        assert!(fifth.is_err(), "the limit holds the fifth request back");

        let sent = Instant::now();
        permits.observe(sent, AttemptOutcome::Overloaded, false, TOKENS);
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
        permits.observe(after_cut, AttemptOutcome::Answered, false, TOKENS);
        permits.observe(after_cut, AttemptOutcome::Answered, false, TOKENS);
        assert_eq!(permits.limit(), 3);
        assert_eq!(permits.semaphore.available_permits(), 1);
        drop(held);
        assert_eq!(permits.semaphore.available_permits(), 2);
    }

    #[test]
    fn a_request_is_alone_when_nothing_else_of_ours_is_at_the_provider() {
        let permits = Permits::new(4, true);
        let first = permits.depart();
        let second = permits.depart();
        assert!(first.alone() && !second.alone());
        drop(first);
        drop(second);
        assert!(permits.depart().alone(), "both answered");
    }

    #[tokio::test]
    async fn a_cut_forgets_available_permits_at_once() {
        let permits = Permits::new(16, true);
        permits.observe(Instant::now(), AttemptOutcome::Overloaded, false, TOKENS);
        assert_eq!(permits.semaphore.available_permits(), 1);
        assert_eq!(permits.in_use(), 0);
    }

    /// A timed-out request waits until the provider answered one sent after it, or nothing of ours is in flight.
    #[tokio::test(start_paused = true)]
    async fn worked_off_waits_for_a_later_answer_or_an_empty_pool() {
        let permits = Permits::new(4, true);
        let timed_out_sent = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let later = permits.acquire().await.expect("open");
        let later_sent = Instant::now();
        let waiting = tokio::spawn({
            let permits = permits.clone();
            async move { permits.worked_off(timed_out_sent).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "a request sent after it is still at the provider");
        permits.observe(later_sent, AttemptOutcome::Answered, true, TOKENS);
        tokio::time::timeout(Duration::from_millis(10), waiting).await.expect("woken by the answer").expect("task");
        drop(later);

        let held = permits.acquire().await.expect("open");
        let waiting = tokio::spawn({
            let permits = permits.clone();
            async move { permits.worked_off(Instant::now() + Duration::from_secs(60)).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_millis(10), waiting)
            .await
            .expect("woken when the pool empties")
            .expect("task");
    }
}
