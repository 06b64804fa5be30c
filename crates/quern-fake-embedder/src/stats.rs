//! Counters since start, shared by the request handlers, `GET /stats` and in-process callers.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Live counters. Relaxed atomics: each counter is exact, but a snapshot is not one instant
/// across counters (a request may show in `requests` before its outcome is counted).
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    inputs: AtomicU64,
    ok: AtomicU64,
    errors_500: AtomicU64,
    throttled_429: AtomicU64,
    rejected_400: AtomicU64,
    refused_base64: AtomicU64,
    unauthorized_401: AtomicU64,
    abandoned: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// A copy of the counters; also the JSON body of `GET /stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// `POST /v1/embeddings` requests received, whatever their outcome.
    pub requests: u64,
    /// Inputs embedded, i.e. vectors returned in `200` answers.
    pub inputs: u64,
    /// Requests answered `200`.
    pub ok: u64,
    /// Requests answered `500` (injected faults, or an internal failure).
    pub errors_500: u64,
    /// Requests answered `429`, by `--throttle-rate` or by `--max-concurrency`.
    pub throttled_429: u64,
    /// Invalid requests: malformed JSON, empty or oversized batch, unreadable body, refused encoding.
    pub rejected_400: u64,
    /// Requests refused for asking `base64` vectors (`--refuse-base64`); also counted in `rejected_400`.
    #[serde(default)]
    pub refused_base64: u64,
    /// Requests answered `401` (`--unauthorized-for-secs`).
    #[serde(default)]
    pub unauthorized_401: u64,
    /// Requests whose client went away before the answer (a client-side timeout, typically).
    #[serde(default)]
    pub abandoned: u64,
    /// Embedding requests being handled right now.
    #[serde(default)]
    pub in_flight: u64,
    /// Peak of `in_flight`, counting requests turned away by `--max-concurrency` too, so it
    /// shows the concurrency the clients attempted.
    pub max_in_flight: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: get(&self.requests),
            inputs: get(&self.inputs),
            ok: get(&self.ok),
            errors_500: get(&self.errors_500),
            throttled_429: get(&self.throttled_429),
            rejected_400: get(&self.rejected_400),
            refused_base64: get(&self.refused_base64),
            unauthorized_401: get(&self.unauthorized_401),
            abandoned: get(&self.abandoned),
            in_flight: get(&self.in_flight),
            max_in_flight: get(&self.max_in_flight),
        }
    }

    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ok(&self, inputs: usize) {
        self.inputs.fetch_add(inputs as u64, Ordering::Relaxed);
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error_500(&self) {
        self.errors_500.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn throttled_429(&self) {
        self.throttled_429.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected_400(&self) {
        self.rejected_400.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused_base64(&self) {
        self.refused_base64.fetch_add(1, Ordering::Relaxed);
        self.rejected_400();
    }

    pub(crate) fn unauthorized_401(&self) {
        self.unauthorized_401.fetch_add(1, Ordering::Relaxed);
    }

    /// A guard that counts the request as abandoned if it is dropped before [`Answering::answered`]: hyper drops
    /// a handler's future when its client closes the connection.
    pub(crate) fn answering(&self) -> Answering<'_> {
        Answering { stats: self, answered: false }
    }

    /// Counts a request as in flight until the guard drops (also when the client disconnects
    /// and the handler future is dropped mid-way). Returns the guard and the in-flight count
    /// including this request.
    pub(crate) fn enter(&self) -> (InFlight<'_>, u64) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        (InFlight(self), now)
    }
}

/// Counts its request as abandoned unless answered before it drops.
#[derive(Debug)]
pub(crate) struct Answering<'a> {
    stats: &'a Stats,
    answered: bool,
}

impl Answering<'_> {
    /// The answer is on its way: the client was still there.
    pub(crate) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Decrements `in_flight` on drop.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
