//! Embedding failures, classified the way providers behave: 408, 429 and 5xx pass, other 4xx do not.

use std::time::Duration;

use quern_core::ErrorClass;

/// A failed embedding request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// The provider answered with an error status.
    #[error("embedding API answered {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The provider's error message (truncated).
        message: String,
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// No answer within the request timeout.
    #[error("embedding request timed out after {0:?}")]
    Timeout(Duration),
    /// The request never got an answer (refused, reset, DNS). The cause is in the message, in plain words.
    #[error("no answer from the embedding API at {endpoint}: {reason}")]
    Transport {
        /// The endpoint, any password in it hidden.
        endpoint: String,
        /// Why, e.g. `connection refused`.
        reason: String,
    },
    /// The answer does not fit the request (count, index or dimension), or is not the expected JSON.
    #[error("embedding API answer is unusable: {0}")]
    InvalidResponse(String),
    /// The client settings cannot work (bad URL, bad header value).
    #[error("embedding client misconfigured: {0}")]
    Config(String),
}

impl EmbedError {
    /// Whether retrying can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            EmbedError::Status { status, .. } => match status {
                408 | 429 => ErrorClass::Transient,
                500..=599 => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            EmbedError::Timeout(_) | EmbedError::Transport { .. } => ErrorClass::Transient,
            EmbedError::InvalidResponse(_) | EmbedError::Config(_) => ErrorClass::Permanent,
        }
    }

    /// Short machine-readable cause, for dead-letter headers and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            EmbedError::Status { status: 429, .. } => "embedding_throttled",
            EmbedError::Status { status: 500..=599, .. } => "embedding_server_error",
            EmbedError::Status { .. } => "embedding_rejected",
            EmbedError::Timeout(_) => "embedding_timeout",
            EmbedError::Transport { .. } => "embedding_unreachable",
            EmbedError::InvalidResponse(_) => "embedding_invalid_response",
            EmbedError::Config(_) => "embedding_config",
        }
    }

    /// How long the provider asked us to wait, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EmbedError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
