//! A message's fate, decided once per delivery and mapped to the broker in exactly one place (the worker).

use std::fmt;

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

/// What to do with a delivery once its processing is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Work committed (or nothing to do): acknowledge.
    Ack,
    /// A transient failure: hand the message back for another attempt.
    Retry {
        /// Why, for the logs and `quern_jobs.last_error`.
        reason: String,
    },
    /// A failure no retry can fix: move the message to the dead-letter queue with its reason.
    DeadLetter {
        /// Short machine-readable cause, e.g. `contract`, `embedding_rejected`.
        reason: String,
        /// The full message a person reads.
        detail: String,
    },
}
