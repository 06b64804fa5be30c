//! The adaptive concurrency limit: additive increase, multiplicative decrease, decided from each attempt's answer.
//!
//! Pure arithmetic with no clock and no I/O: callers pass every instant in, so tests feed answers and assert the
//! limit; `permits.rs` makes the embedding semaphore follow it. The rules, and why:
//!
//! - **Start** at `min(4, max)`: a provider's capacity is unknown, and four requests in flight overload none
//!   worth calling. Until the first overload or slow answer, each healthy answer adds one (the limit doubles
//!   every round trip, TCP's slow start), so a worker reaches its share in a few round trips, not a dozen.
//! - **Cut** to 0.7 × the limit (rounded down, at least 1) when an attempt meets an overload: 429, 503, 504
//!   or no answer within the timeout. 0.7 is TCP CUBIC's factor: against a provider shared by several
//!   workers, halving gave away a tenth of the capacity between probes (simulated: 3 workers sharing 24
//!   slots at 2 s a request used 85% of them with ×0.5, 94% with ×0.7 and slow start). One overload cuts
//!   once: an answer to an attempt sent before the last cut says nothing about the new limit, so it neither
//!   cuts again nor counts toward growth. That window lasts until the requests sent before the cut have
//!   answered, about one request latency, and needs no latency estimate: a whole generation of timeouts
//!   counts once however long they straggle.
//! - **Grow** by one after `limit` healthy answers, about one round trip at full use. An answer is healthy
//!   when its latency is at most twice the baseline, the smallest latency of the last 10 s (the baseline
//!   expires like BBR's minimum round-trip time, so one fast one-chunk request cannot stop growth for
//!   good), and when at least half the limit was in flight (as Netflix's concurrency-limits AIMD requires),
//!   so a quiet spell does not ratchet the limit up to the maximum. A slower answer holds the limit: queueing
//!   at the provider shows as latency before it shows as errors (TCP Vegas' insight).
//! - **Plateau**: growing back to the limit at which the last cut happened takes eight windows instead of one,
//!   as CUBIC lingers near its last loss point. Against a provider with a hard cap the probe, and the 429 it
//!   costs, comes every ~10 round trips instead of every 2 or 3; once a probe passes, growth is quick again.

use std::time::Duration;

use tokio::time::Instant;

/// Requests in flight at start, unless the maximum is lower.
pub const INITIAL_LIMIT: usize = 4;
/// Factor applied to the limit on an overload.
pub const CUT_FACTOR: f64 = 0.7;
/// An answer slower than this multiple of the baseline latency does not count toward growth.
pub const SLOW_ANSWER_FACTOR: u32 = 2;
/// How long the smallest latency seen stays the baseline unless a faster or equal answer renews it.
pub const BASELINE_WINDOW: Duration = Duration::from_secs(10);
/// Windows of healthy answers needed to grow back to the limit of the last cut.
pub const PLATEAU_WINDOWS: usize = 8;

/// What one attempt's answer says about the provider's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Embeddings came back.
    Answered,
    /// The provider is overloaded: 429, 503, 504, or no answer within the timeout.
    Overloaded,
    /// Says nothing about load: a refused request (4xx), a 500, a broken connection, an unusable answer.
    Other,
}

/// One finished attempt, as the limit sees it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// When the request left.
    pub started: Instant,
    /// When its answer (or failure) came back.
    pub finished: Instant,
    /// What the answer says about load.
    pub outcome: AttemptOutcome,
    /// Attempts in flight when it finished, itself included.
    pub in_flight: usize,
}

/// The limit moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitChange {
    /// The limit before.
    pub from: usize,
    /// The limit now.
    pub to: usize,
}

/// The number of embedding requests allowed in flight, between 1 and a fixed maximum.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    max: usize,
    limit: usize,
    /// Growing by one per healthy answer, until the first overload or slow answer.
    slow_start: bool,
    /// Healthy answers since the limit last moved.
    healthy_answers: usize,
    /// When the limit was last cut: answers to attempts sent earlier are ignored.
    last_cut: Option<Instant>,
    /// The limit in force when it was last cut: growing back to it takes [`PLATEAU_WINDOWS`] windows.
    cut_at: Option<usize>,
    /// The smallest recent latency, and when it was seen.
    baseline: Option<(Duration, Instant)>,
}

impl AdaptiveLimit {
    /// A limit of `min(INITIAL_LIMIT, max)` that never exceeds `max` (at least 1).
    pub fn new(max: usize) -> AdaptiveLimit {
        let max = max.max(1);
        AdaptiveLimit {
            max,
            limit: INITIAL_LIMIT.min(max),
            slow_start: true,
            healthy_answers: 0,
            last_cut: None,
            cut_at: None,
            baseline: None,
        }
    }

    /// Requests allowed in flight now.
    pub fn current(&self) -> usize {
        self.limit
    }

    /// The configured maximum.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes one attempt's answer into account; says how the limit moved, if it did.
    pub fn observe(&mut self, attempt: Attempt) -> Option<LimitChange> {
        let latency = attempt.finished.saturating_duration_since(attempt.started);
        if attempt.outcome == AttemptOutcome::Answered {
            self.note_latency(latency, attempt.finished);
        }
        // Sent under an older, higher limit: its answer was already accounted for by the cut.
        if self.last_cut.is_some_and(|cut| attempt.started < cut) {
            return None;
        }
        match attempt.outcome {
            AttemptOutcome::Overloaded => self.cut(attempt.finished),
            AttemptOutcome::Answered if !self.is_healthy(latency) => {
                self.slow_start = false;
                None
            }
            AttemptOutcome::Answered if attempt.in_flight * 2 >= self.limit => self.grow(),
            AttemptOutcome::Answered | AttemptOutcome::Other => None,
        }
    }

    fn cut(&mut self, now: Instant) -> Option<LimitChange> {
        let from = self.limit;
        self.limit = ((from as f64 * CUT_FACTOR) as usize).max(1);
        self.last_cut = Some(now);
        self.cut_at = Some(from);
        self.slow_start = false;
        self.healthy_answers = 0;
        (self.limit != from).then_some(LimitChange { from, to: self.limit })
    }

    fn grow(&mut self) -> Option<LimitChange> {
        if self.limit >= self.max {
            return None;
        }
        self.healthy_answers += 1;
        let needed = if self.slow_start {
            1
        } else if self.cut_at == Some(self.limit + 1) {
            self.limit * PLATEAU_WINDOWS
        } else {
            self.limit
        };
        if self.healthy_answers < needed {
            return None;
        }
        let from = self.limit;
        self.limit += 1;
        self.healthy_answers = 0;
        Some(LimitChange { from, to: self.limit })
    }

    fn note_latency(&mut self, latency: Duration, now: Instant) {
        let renew = match self.baseline {
            Some((best, seen)) => latency <= best || now.saturating_duration_since(seen) >= BASELINE_WINDOW,
            None => true,
        };
        if renew {
            self.baseline = Some((latency, now));
        }
    }

    fn is_healthy(&self, latency: Duration) -> bool {
        self.baseline.is_none_or(|(best, _)| latency <= best * SLOW_ANSWER_FACTOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATENCY: Duration = Duration::from_millis(100);

    /// Drives a limit through attempts on a clock of its own; nothing here sleeps.
    struct Driver {
        limit: AdaptiveLimit,
        now: Instant,
    }

    impl Driver {
        fn new(max: usize) -> Driver {
            Driver { limit: AdaptiveLimit::new(max), now: Instant::now() }
        }

        /// One attempt sent now, answered `latency` later with every permit of the limit in use.
        fn attempt(&mut self, outcome: AttemptOutcome, latency: Duration) -> Option<LimitChange> {
            let started = self.now;
            self.now += latency;
            let in_flight = self.limit.current();
            self.limit.observe(Attempt { started, finished: self.now, outcome, in_flight })
        }

        fn answers(&mut self, count: usize) {
            for _ in 0..count {
                self.attempt(AttemptOutcome::Answered, LATENCY);
            }
        }
    }

    #[test]
    fn starts_modest_and_within_the_maximum() {
        assert_eq!(AdaptiveLimit::new(16).current(), 4);
        assert_eq!(AdaptiveLimit::new(2).current(), 2);
        assert_eq!(AdaptiveLimit::new(0).current(), 1);
    }

    #[test]
    fn slow_start_adds_one_per_answer_until_the_first_overload_then_one_per_window() {
        let mut driver = Driver::new(64);
        driver.answers(12);
        assert_eq!(driver.limit.current(), 16, "doubles in about a round trip");
        assert_eq!(driver.attempt(AttemptOutcome::Overloaded, Duration::ZERO), Some(LimitChange { from: 16, to: 11 }));
        driver.answers(10);
        assert_eq!(driver.limit.current(), 11, "a window is `limit` answers");
        assert_eq!(driver.attempt(AttemptOutcome::Answered, LATENCY), Some(LimitChange { from: 11, to: 12 }));
        driver.answers(12);
        assert_eq!(driver.limit.current(), 13);
    }

    #[test]
    fn never_grows_past_the_maximum() {
        let mut driver = Driver::new(6);
        driver.answers(100);
        assert_eq!(driver.limit.current(), 6);
        driver.attempt(AttemptOutcome::Overloaded, Duration::ZERO);
        driver.answers(1000);
        assert_eq!(driver.limit.current(), 6);
    }

    #[test]
    fn an_overload_cuts_the_limit_to_seven_tenths_but_never_below_one() {
        let mut driver = Driver::new(64);
        driver.answers(6);
        assert_eq!(driver.limit.current(), 10);
        assert_eq!(driver.attempt(AttemptOutcome::Overloaded, Duration::ZERO), Some(LimitChange { from: 10, to: 7 }));
        for to in [4, 2, 1, 1] {
            driver.attempt(AttemptOutcome::Overloaded, LATENCY);
            assert_eq!(driver.limit.current(), to);
        }
    }

    #[test]
    fn a_burst_of_overloads_from_one_window_cuts_once() {
        let mut limit = AdaptiveLimit::new(16);
        let sent = Instant::now();
        // Four requests sent together; all four come back 429, one after the other.
        let throttled =
            |finished| Attempt { started: sent, finished, outcome: AttemptOutcome::Overloaded, in_flight: 4 };
        assert_eq!(limit.observe(throttled(sent + LATENCY)), Some(LimitChange { from: 4, to: 2 }));
        for late in 1..4 {
            assert_eq!(limit.observe(throttled(sent + LATENCY * (1 + late))), None);
        }
        assert_eq!(limit.current(), 2);
        // So does a whole generation of timeouts, however long they straggle.
        let timed_out = Attempt {
            started: sent,
            finished: sent + LATENCY * 300,
            outcome: AttemptOutcome::Overloaded,
            in_flight: 1,
        };
        assert_eq!(limit.observe(timed_out), None);
        // A request sent after the cut that is throttled again is a new overload.
        let resent = sent + LATENCY * 2;
        let again = Attempt { started: resent, finished: resent + LATENCY, ..timed_out };
        assert_eq!(limit.observe(again), Some(LimitChange { from: 2, to: 1 }));
    }

    #[test]
    fn answers_to_requests_sent_before_a_cut_do_not_count_toward_growth() {
        let mut limit = AdaptiveLimit::new(16);
        let sent = Instant::now();
        let cut_at = sent + LATENCY;
        limit.observe(Attempt { started: sent, finished: cut_at, outcome: AttemptOutcome::Overloaded, in_flight: 4 });
        let stale = Attempt { started: sent, finished: cut_at, outcome: AttemptOutcome::Answered, in_flight: 2 };
        for _ in 0..10 {
            assert_eq!(limit.observe(stale), None);
        }
        assert_eq!(limit.current(), 2);
        let fresh = Attempt { started: cut_at, finished: cut_at + LATENCY, ..stale };
        limit.observe(fresh);
        assert_eq!(limit.observe(fresh), Some(LimitChange { from: 2, to: 3 }));
    }

    #[test]
    fn growing_back_to_the_limit_that_overloaded_takes_a_plateau_of_windows() {
        let mut driver = Driver::new(16);
        driver.answers(1);
        assert_eq!(driver.limit.current(), 5);
        driver.attempt(AttemptOutcome::Overloaded, Duration::ZERO);
        assert_eq!(driver.limit.current(), 3);
        driver.answers(3);
        assert_eq!(driver.limit.current(), 4, "quick recovery below the limit that overloaded");
        driver.answers(4 * PLATEAU_WINDOWS - 1);
        assert_eq!(driver.limit.current(), 4, "probing 5 again waits");
        driver.answers(1);
        assert_eq!(driver.limit.current(), 5);
        driver.answers(5);
        assert_eq!(driver.limit.current(), 6, "past the old limit, growth is quick again");
    }

    #[test]
    fn slow_answers_hold_the_limit_and_end_slow_start() {
        let mut driver = Driver::new(16);
        driver.answers(1);
        assert_eq!(driver.limit.current(), 5);
        let slow = LATENCY * SLOW_ANSWER_FACTOR + Duration::from_millis(1);
        // 40 of them take 8 s, within the baseline's window (after it, the slower latency is the baseline).
        for _ in 0..40 {
            assert_eq!(driver.attempt(AttemptOutcome::Answered, slow), None);
        }
        assert_eq!(driver.limit.current(), 5);
        for _ in 0..4 {
            driver.attempt(AttemptOutcome::Answered, LATENCY * SLOW_ANSWER_FACTOR);
        }
        assert_eq!(driver.limit.current(), 5, "healthy answers count again, one window per step");
        driver.attempt(AttemptOutcome::Answered, LATENCY);
        assert_eq!(driver.limit.current(), 6);
    }

    #[test]
    fn the_baseline_latency_expires_so_one_fast_outlier_does_not_stop_growth() {
        let mut driver = Driver::new(16);
        driver.attempt(AttemptOutcome::Answered, Duration::from_millis(5));
        let slow = Duration::from_millis(50);
        let answers_in_window = (BASELINE_WINDOW.as_millis() / slow.as_millis()) as usize;
        for _ in 0..answers_in_window - 1 {
            driver.attempt(AttemptOutcome::Answered, slow);
        }
        assert_eq!(driver.limit.current(), 5, "ten times the baseline: held");
        driver.answers(10);
        assert!(driver.limit.current() > 5, "the outlier expired; now at {}", driver.limit.current());
    }

    #[test]
    fn a_limit_not_in_use_does_not_grow() {
        let mut limit = AdaptiveLimit::new(16);
        let mut now = Instant::now();
        for _ in 0..100 {
            let answer =
                Attempt { started: now, finished: now + LATENCY, outcome: AttemptOutcome::Answered, in_flight: 1 };
            now += LATENCY;
            limit.observe(answer);
        }
        assert_eq!(limit.current(), 4, "one request at a time proves nothing about four");
    }

    #[test]
    fn other_failures_neither_cut_nor_grow() {
        let mut driver = Driver::new(16);
        for _ in 0..50 {
            assert_eq!(driver.attempt(AttemptOutcome::Other, LATENCY), None);
        }
        assert_eq!(driver.limit.current(), 4);
    }

    #[test]
    fn against_a_hard_cap_the_limit_stays_near_it_with_few_overloads() {
        // A provider that takes 6 at once: more gets a 429 at once.
        let capacity = 6;
        let mut driver = Driver::new(16);
        let mut overloads = 0;
        let mut answers = 0;
        for _ in 0..2000 {
            if driver.limit.current() > capacity {
                driver.attempt(AttemptOutcome::Overloaded, Duration::ZERO);
                overloads += 1;
            } else {
                driver.attempt(AttemptOutcome::Answered, LATENCY);
                answers += 1;
            }
            assert!(driver.limit.current() <= capacity + 1);
        }
        assert!(overloads * 30 < answers, "{overloads} overloads for {answers} answers");
    }
}
