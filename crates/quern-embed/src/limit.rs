//! The adaptive concurrency limit: additive increase, multiplicative decrease on overloads and on queueing,
//! decided from each attempt's answer.
//!
//! Pure arithmetic with no clock and no I/O: callers pass every instant in, so tests feed answers and assert the
//! limit; `permits.rs` makes the embedding semaphore follow it; `latency.rs` keeps the baseline latencies. The
//! rules, and why:
//!
//! - **Start** at `min(2, max)`: a provider's capacity is unknown, and a CPU server that computes one request
//!   at a time makes the n-th request sent at once wait n - 1 whole service times (measured: 2-7 s for 32
//!   chunks on 2 cores, so 16 at once passed a 30 s timeout). Until the first overload or slow answer, each
//!   healthy answer adds one (the limit doubles every round trip, TCP's slow start), so a worker still reaches
//!   16 in three round trips.
//! - **Cut** to 0.7 × the limit (rounded down, at least 1) when an attempt meets an overload: 429, 503, 504
//!   or no answer within the timeout. 0.7 is TCP CUBIC's factor: against a provider shared by several
//!   workers, halving gave away a tenth of the capacity between probes (simulated: 3 workers sharing 24
//!   slots at 2 s a request used 85% of them with ×0.5, 94% with ×0.7 and slow start). One overload cuts
//!   once: an answer to an attempt sent before the last cut says nothing about the new limit, so it neither
//!   cuts again nor counts toward growth. That window lasts until the requests sent before the cut have
//!   answered, about one request latency, and needs no latency estimate: a whole generation of timeouts
//!   counts once however long they straggle.
//! - **A timeout cuts to 1**: an answer that did not come within the whole timeout means requests wait at the
//!   provider far longer than one takes. At 1, timed-out requests are resent one at a time, and the limit
//!   grows back from there.
//! - **Queueing cuts too** (TCP Vegas' insight: queueing at the provider shows as latency before it shows as
//!   errors, and a provider that queues rather than refuses never shows errors until requests time out). Each
//!   answer's latency is compared with the baseline of its size (`latency.rs`); a window of `limit` answers to
//!   requests sent at the current limit whose median took more than [`QUEUEING_FACTOR`] times it cuts the
//!   limit to `limit / median`: the number of requests the provider serves at once, if its latency grows
//!   with the requests waiting (a provider serving one at a time answers the second of two in twice the time,
//!   so the limit falls to 1). Gradient limits such as Netflix's use the same ratio.
//! - **Grow** by one after `limit` healthy answers, about one round trip at full use. An answer is healthy
//!   when it took at most [`QUEUEING_FACTOR`] times its baseline (or no baseline is known yet), and when at least
//!   half the limit was in flight (as Netflix's concurrency-limits AIMD requires), so a quiet spell does not
//!   ratchet the limit up to the maximum. A slower answer holds the limit.
//! - **Plateau**: growing back to the limit at which the last cut happened takes eight windows instead of one,
//!   as CUBIC lingers near its last loss point. Against a provider with a hard cap the probe, and the 429 it
//!   costs, comes every ~10 round trips instead of every 2 or 3; against one serving one request at a time,
//!   the second request goes every ninth answer. Once a probe passes, growth is quick again.

use std::time::Duration;

use tokio::time::Instant;

use crate::latency::{upper_median, Baselines};

/// Requests in flight at start, unless the maximum is lower.
pub const INITIAL_LIMIT: usize = 2;
/// Factor applied to the limit on an overload.
pub const CUT_FACTOR: f64 = 0.7;
/// An answer slower than this multiple of its baseline waited in a queue (for about half its service time or
/// more): it holds the limit, and a window of them cuts it. Below 2, so that two requests at a provider serving
/// one at a time (the second answered in twice the time) are seen as queueing.
pub const QUEUEING_FACTOR: f64 = 1.5;
/// Windows of healthy answers needed to grow back to the limit of the last cut.
pub const PLATEAU_WINDOWS: usize = 8;

/// What one attempt's answer says about the provider's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Embeddings came back.
    Answered,
    /// The provider is overloaded: 429, 503 or 504.
    Overloaded,
    /// No answer within the timeout: the provider is saturated (or hung).
    TimedOut,
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
    /// Whether it was sent with nothing else of ours in flight (so nothing of ours was queued ahead of it).
    pub alone: bool,
    /// Its estimated tokens: latencies are compared with those of requests of about the same size.
    pub tokens: usize,
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
    /// Baseline latencies, per request size.
    baselines: Baselines,
    /// When the limit last moved: the window holds answers to requests sent since.
    window_since: Option<Instant>,
    /// Latency ratios of the window's answers.
    window: Vec<f64>,
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
            baselines: Baselines::default(),
            window_since: None,
            window: Vec::new(),
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

    /// The baseline latency for requests of `tokens`, once one was sent alone.
    pub fn baseline(&self, tokens: usize) -> Option<Duration> {
        self.baselines.baseline(tokens)
    }

    /// Takes one attempt's answer into account; says how the limit moved, if it did.
    pub fn observe(&mut self, attempt: Attempt) -> Option<LimitChange> {
        let latency = attempt.finished.saturating_duration_since(attempt.started);
        if attempt.outcome == AttemptOutcome::Answered && attempt.alone {
            self.baselines.note_alone(attempt.tokens, latency);
        }
        // Sent under an older, higher limit: its answer was already accounted for by the cut.
        if self.last_cut.is_some_and(|cut| attempt.started < cut) {
            return None;
        }
        match attempt.outcome {
            AttemptOutcome::Overloaded => {
                let to = ((self.limit as f64 * CUT_FACTOR) as usize).max(1);
                self.cut(to, attempt.finished)
            }
            AttemptOutcome::TimedOut => self.cut(1, attempt.finished),
            AttemptOutcome::Answered => {
                let ratio = self.baselines.ratio(attempt.tokens, latency);
                if let Some(change) = self.judge_window(&attempt, ratio) {
                    return Some(change);
                }
                if ratio.is_some_and(|ratio| ratio > QUEUEING_FACTOR) {
                    self.slow_start = false;
                    None
                } else if attempt.in_flight * 2 >= self.limit {
                    self.grow(attempt.finished)
                } else {
                    None
                }
            }
            AttemptOutcome::Other => None,
        }
    }

    /// Adds an answer to the window; once it holds `limit` answers, cuts if their median waited in a queue.
    fn judge_window(&mut self, attempt: &Attempt, ratio: Option<f64>) -> Option<LimitChange> {
        let ratio = ratio?;
        if self.window_since.is_some_and(|since| attempt.started < since) {
            return None;
        }
        self.window.push(ratio);
        if self.window.len() < self.limit {
            return None;
        }
        let median = upper_median(&mut self.window).unwrap_or(1.0);
        self.window.clear();
        self.window_since = Some(attempt.finished);
        if median <= QUEUEING_FACTOR {
            return None;
        }
        let to = ((self.limit as f64 / median) as usize).max(1);
        self.cut(to, attempt.finished)
    }

    fn cut(&mut self, to: usize, now: Instant) -> Option<LimitChange> {
        let from = self.limit;
        self.limit = to.min(from);
        self.last_cut = Some(now);
        self.cut_at = Some(from);
        self.slow_start = false;
        self.healthy_answers = 0;
        self.restart_window(now);
        (self.limit != from).then_some(LimitChange { from, to: self.limit })
    }

    fn grow(&mut self, now: Instant) -> Option<LimitChange> {
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
        self.restart_window(now);
        Some(LimitChange { from, to: self.limit })
    }

    /// Answers to requests sent at another limit are not compared with those sent at this one.
    fn restart_window(&mut self, now: Instant) {
        self.window.clear();
        self.window_since = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATENCY: Duration = Duration::from_millis(100);
    /// A provider's time for a full request, in the tests of queueing (well above `MIN_QUEUE_DELAY`).
    const SERVICE: Duration = Duration::from_secs(1);
    /// The estimated tokens of every request here: one size class.
    const TOKENS: usize = 8000;

    /// Drives a limit through attempts on a clock of its own; nothing here sleeps.
    struct Driver {
        limit: AdaptiveLimit,
        now: Instant,
    }

    impl Driver {
        fn new(max: usize) -> Driver {
            Driver { limit: AdaptiveLimit::new(max), now: Instant::now() }
        }

        /// One attempt sent now, answered `latency` later with every permit of the limit in use (so not alone,
        /// and no baseline comes of it).
        fn attempt(&mut self, outcome: AttemptOutcome, latency: Duration) -> Option<LimitChange> {
            let started = self.now;
            self.now += latency;
            let in_flight = self.limit.current();
            let attempt = Attempt { started, finished: self.now, outcome, in_flight, alone: false, tokens: TOKENS };
            self.limit.observe(attempt)
        }

        /// One request sent with nothing else in flight, answered `latency` later: it sets the baseline.
        fn alone(&mut self, latency: Duration) -> Option<LimitChange> {
            let started = self.now;
            self.now += latency;
            let outcome = AttemptOutcome::Answered;
            self.limit.observe(Attempt {
                started,
                finished: self.now,
                outcome,
                in_flight: 1,
                alone: true,
                tokens: TOKENS,
            })
        }

        fn answers(&mut self, count: usize) {
            for _ in 0..count {
                self.attempt(AttemptOutcome::Answered, LATENCY);
            }
        }
    }

    fn attempt(started: Instant, finished: Instant, outcome: AttemptOutcome, in_flight: usize) -> Attempt {
        Attempt { started, finished, outcome, in_flight, alone: false, tokens: TOKENS }
    }

    /// The start was 4: a CPU server computing one request at a time made the fourth wait three service
    /// times (7 s each measured: past a 30 s timeout with the fifth). 2 keeps the first round trip's wait to one.
    #[test]
    fn starts_modest_and_within_the_maximum() {
        assert_eq!(AdaptiveLimit::new(16).current(), 2);
        assert_eq!(AdaptiveLimit::new(1).current(), 1);
        assert_eq!(AdaptiveLimit::new(0).current(), 1);
    }

    #[test]
    fn slow_start_adds_one_per_answer_until_the_first_overload_then_one_per_window() {
        let mut driver = Driver::new(64);
        driver.answers(14);
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
        driver.answers(8);
        assert_eq!(driver.limit.current(), 10);
        assert_eq!(driver.attempt(AttemptOutcome::Overloaded, Duration::ZERO), Some(LimitChange { from: 10, to: 7 }));
        for to in [4, 2, 1, 1] {
            driver.attempt(AttemptOutcome::Overloaded, LATENCY);
            assert_eq!(driver.limit.current(), to);
        }
    }

    /// A limit of 4, grown from the start by two answers.
    fn limit_of_four() -> (AdaptiveLimit, Instant) {
        let mut driver = Driver::new(16);
        driver.answers(2);
        assert_eq!(driver.limit.current(), 4);
        (driver.limit, driver.now)
    }

    #[test]
    fn a_burst_of_overloads_from_one_window_cuts_once() {
        let (mut limit, sent) = limit_of_four();
        // Four requests sent together; all four come back 429, one after the other.
        let throttled = |finished| attempt(sent, finished, AttemptOutcome::Overloaded, 4);
        assert_eq!(limit.observe(throttled(sent + LATENCY)), Some(LimitChange { from: 4, to: 2 }));
        for late in 1..4 {
            assert_eq!(limit.observe(throttled(sent + LATENCY * (1 + late))), None);
        }
        assert_eq!(limit.current(), 2);
        // So does a whole generation of timeouts, however long they straggle.
        let timed_out = attempt(sent, sent + LATENCY * 300, AttemptOutcome::Overloaded, 1);
        assert_eq!(limit.observe(timed_out), None);
        // A request sent after the cut that is throttled again is a new overload.
        let resent = sent + LATENCY * 2;
        let again = Attempt { started: resent, finished: resent + LATENCY, ..timed_out };
        assert_eq!(limit.observe(again), Some(LimitChange { from: 2, to: 1 }));
    }

    #[test]
    fn a_timeout_cuts_to_one_once_per_generation() {
        let mut driver = Driver::new(16);
        driver.answers(8);
        assert_eq!(driver.attempt(AttemptOutcome::TimedOut, SERVICE * 30), Some(LimitChange { from: 10, to: 1 }));
        let (mut limit, now) = (driver.limit, driver.now);
        let straggler = attempt(now - SERVICE * 40, now + SERVICE, AttemptOutcome::TimedOut, 9);
        assert_eq!(limit.observe(straggler), None, "sent before the cut");
        assert_eq!(limit.current(), 1);
    }

    #[test]
    fn answers_to_requests_sent_before_a_cut_do_not_count_toward_growth() {
        let (mut limit, sent) = limit_of_four();
        let cut_at = sent + LATENCY;
        limit.observe(attempt(sent, cut_at, AttemptOutcome::Overloaded, 4));
        let stale = attempt(sent, cut_at, AttemptOutcome::Answered, 2);
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
        driver.answers(3);
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

    /// Before, a slow answer was one over twice the fastest of the last 10 s, and it only held the limit. Now
    /// the baseline comes from requests sent alone, and a slow answer is one over 1.5 times it: it still holds
    /// the limit and ends slow start (a window of them cuts, below).
    #[test]
    fn a_slow_answer_holds_the_limit_and_ends_slow_start() {
        let mut driver = Driver::new(16);
        assert_eq!(driver.alone(SERVICE), Some(LimitChange { from: 2, to: 3 }));
        assert_eq!(driver.attempt(AttemptOutcome::Answered, SERVICE * 2), None, "twice the baseline: held");
        for _ in 0..2 {
            assert_eq!(driver.attempt(AttemptOutcome::Answered, SERVICE), None);
        }
        assert_eq!(driver.limit.current(), 3, "out of slow start: a window of healthy answers per step");
        assert_eq!(driver.attempt(AttemptOutcome::Answered, SERVICE), Some(LimitChange { from: 3, to: 4 }));
    }

    /// A provider that queues what it cannot serve at once answers a window of requests in `limit / capacity`
    /// service times each: the window's median says how many it serves at once.
    #[test]
    fn a_window_of_queued_answers_cuts_the_limit_to_what_the_provider_serves_at_once() {
        let mut driver = Driver::new(16);
        driver.alone(SERVICE);
        driver.answers(5);
        assert_eq!(driver.limit.current(), 8);
        // A window whose median is within 1.5 times the baseline cuts nothing, whatever its slowest answers.
        for latency in [SERVICE * 10, SERVICE * 10, SERVICE * 10, SERVICE, SERVICE, SERVICE, SERVICE, SERVICE] {
            assert_eq!(driver.attempt(AttemptOutcome::Answered, latency), None);
        }
        for _ in 0..7 {
            assert_eq!(driver.attempt(AttemptOutcome::Answered, SERVICE * 4), None);
        }
        assert_eq!(driver.attempt(AttemptOutcome::Answered, SERVICE * 4), Some(LimitChange { from: 8, to: 2 }));
    }

    /// Two requests at a provider serving one at a time: the first answered in one service time, the second
    /// after it, in two. The window's upper median is the second's ratio, 2: the limit falls to 1, and 2 is
    /// probed again only after a plateau of answers one at a time.
    #[test]
    fn a_provider_serving_one_request_at_a_time_is_given_one_at_a_time() {
        let mut driver = Driver::new(2);
        driver.alone(SERVICE);
        driver.alone(SERVICE);
        let sent = driver.now;
        let first = attempt(sent, sent + SERVICE, AttemptOutcome::Answered, 2);
        assert_eq!(driver.limit.observe(first), None);
        let second = attempt(sent, sent + SERVICE * 2, AttemptOutcome::Answered, 1);
        assert_eq!(driver.limit.observe(second), Some(LimitChange { from: 2, to: 1 }));
        driver.now = sent + SERVICE * 2;
        for _ in 0..PLATEAU_WINDOWS - 1 {
            assert_eq!(driver.alone(SERVICE), None, "one at a time, answered in one service time");
        }
        assert_eq!(driver.alone(SERVICE), Some(LimitChange { from: 1, to: 2 }), "the plateau over, 2 is probed");
    }

    #[test]
    fn one_fast_outlier_does_not_stop_growth() {
        let mut driver = Driver::new(16);
        driver.alone(Duration::from_millis(5));
        for _ in 0..4 {
            driver.alone(SERVICE);
        }
        assert_eq!(driver.limit.baseline(TOKENS), Some(SERVICE), "the median of the lone answers");
        let before = driver.limit.current();
        driver.answers(10);
        for _ in 0..10 {
            driver.attempt(AttemptOutcome::Answered, SERVICE * 6 / 5);
        }
        assert!(driver.limit.current() > before, "healthy at 1.2 times: now at {}", driver.limit.current());
    }

    #[test]
    fn a_limit_not_in_use_does_not_grow() {
        let mut limit = AdaptiveLimit::new(16);
        let mut now = Instant::now();
        for _ in 0..100 {
            limit.observe(attempt(now, now + LATENCY, AttemptOutcome::Answered, 1));
            now += LATENCY;
        }
        assert_eq!(limit.current(), 3, "one request at a time uses half of 2, but proves nothing about 4");
    }

    #[test]
    fn other_failures_neither_cut_nor_grow() {
        let mut driver = Driver::new(16);
        for _ in 0..50 {
            assert_eq!(driver.attempt(AttemptOutcome::Other, LATENCY), None);
        }
        assert_eq!(driver.limit.current(), 2);
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
