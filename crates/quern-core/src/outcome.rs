//! A message's fate, decided once per delivery and mapped to the broker in exactly one place (the worker).

use std::fmt;
use std::time::Duration;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A fault outside the job (network, throttling, a restarting database): retry later.
    Transient,
    /// The job itself cannot succeed as it is (malformed, refused by the provider): dead-letter it.
    Permanent,
}

impl ErrorClass {
    /// The label used in dead-letter headers, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt failed, for headers, logs and `quern_jobs.last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Transient or permanent.
    pub class: ErrorClass,
    /// Short machine-readable cause, e.g. `contract`, `embedding_rejected`, `limit_chunks`.
    pub reason: String,
    /// The full message a person reads.
    pub detail: String,
}

/// What to do with a delivery once its processing is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Work committed (or nothing to do): acknowledge.
    Ack,
    /// A transient failure: park the message in the delay queue of `after`, then try again.
    Retry {
        /// Delay tier to wait in.
        after: Duration,
        /// Failed attempts so far, carried in the message's attempt header.
        failed_attempts: u32,
        /// What went wrong.
        failure: Failure,
    },
    /// Not the job's fault: the embedding provider refuses every request for now (a revoked key, an unknown
    /// model, nobody listening). Park the message in the delay queue of `after` with its attempt count
    /// unchanged; the worker takes no new jobs until the provider answers again.
    GiveBack {
        /// Delay tier to wait in.
        after: Duration,
        /// Failed attempts so far, unchanged by this one.
        failed_attempts: u32,
        /// What the provider answered.
        failure: Failure,
    },
    /// A failure no retry can fix, or attempts used up: move the message to the dead-letter queue.
    DeadLetter {
        /// Failed attempts so far.
        failed_attempts: u32,
        /// What went wrong.
        failure: Failure,
    },
}
