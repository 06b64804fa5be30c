//! Counters since start, shared by the handlers, the worker pool, `GET /stats` and in-process callers.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Live counters. Relaxed atomics: each counter is exact, a snapshot is not one instant across counters.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    inputs: AtomicU64,
    rejected_4xx: AtomicU64,
    busy_503: AtomicU64,
    errors_500: AtomicU64,
    skipped_inputs: AtomicU64,
    queued_inputs: AtomicU64,
    running_batches: AtomicU64,
}

/// A copy of the counters; also the JSON body of `GET /stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// `POST /v1/embeddings` requests received, whatever their outcome.
    pub requests: u64,
    /// Requests answered `200`.
    pub ok: u64,
    /// Inputs embedded, i.e. vectors returned in `200` answers.
    pub inputs: u64,
    /// Requests refused as invalid: `400`, `404` (unknown model), `413`.
    pub rejected_4xx: u64,
    /// Requests turned away at once because the queue was full.
    pub busy_503: u64,
    /// Requests that failed inside the model (`500`).
    pub errors_500: u64,
    /// Inputs never computed because their client went away while they waited.
    pub skipped_inputs: u64,
    /// Inputs admitted and not yet answered (a gauge).
    pub queued_inputs: u64,
    /// Forward passes running right now (a gauge, at most the number of workers).
    pub running_batches: u64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

fn sub(counter: &AtomicU64, n: usize) {
    counter.fetch_sub(n as u64, Ordering::Relaxed);
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: get(&self.requests),
            ok: get(&self.ok),
            inputs: get(&self.inputs),
            rejected_4xx: get(&self.rejected_4xx),
            busy_503: get(&self.busy_503),
            errors_500: get(&self.errors_500),
            skipped_inputs: get(&self.skipped_inputs),
            queued_inputs: get(&self.queued_inputs),
            running_batches: get(&self.running_batches),
        }
    }

    pub(crate) fn request(&self) {
        add(&self.requests, 1);
    }

    pub(crate) fn ok(&self, inputs: usize) {
        add(&self.ok, 1);
        add(&self.inputs, inputs);
    }

    pub(crate) fn rejected(&self) {
        add(&self.rejected_4xx, 1);
    }

    pub(crate) fn busy(&self) {
        add(&self.busy_503, 1);
    }

    pub(crate) fn error(&self) {
        add(&self.errors_500, 1);
    }

    pub(crate) fn skipped(&self, inputs: usize) {
        add(&self.skipped_inputs, inputs);
    }

    pub(crate) fn admitted(&self, inputs: usize) {
        add(&self.queued_inputs, inputs);
    }

    pub(crate) fn released(&self, inputs: usize) {
        sub(&self.queued_inputs, inputs);
    }

    pub(crate) fn batch_started(&self) {
        add(&self.running_batches, 1);
    }

    pub(crate) fn batch_finished(&self) {
        sub(&self.running_batches, 1);
    }
}
