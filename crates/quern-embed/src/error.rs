//! Embedding failures, classified the way providers behave: 408, 429 and 5xx pass; a refusal blames either the
//! inputs a request carried (only their jobs fail) or the provider's settings (every request alike: no job fails).

use std::time::Duration;

use quern_core::ErrorClass;

use crate::refusal::{self, ErrorBody, Judgement};

/// A failed embedding request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// The provider answered with an error status.
    #[error("embedding API answered {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The provider's error message, read from its error body (truncated).
        message: String,
        /// The request field the provider named as at fault (`param`), when it named one.
        param: Option<String>,
        /// The provider's machine-readable error code, when it sent one.
        code: Option<String>,
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
    /// A fault inside this process, neither the settings' nor the provider's nor a job's (the pool's dispatcher
    /// stopped): passing trouble for the job, which the worker gives back rather than dead-letters.
    #[error("internal error in the embedding pool: {0}")]
    Internal(String),
    /// The provider refuses every request for now (this is what it last answered); the request was not sent.
    /// No job is at fault: the pool holds requests back and probes the provider until it answers.
    #[error("{0}")]
    Unavailable(Box<EmbedError>),
}

/// Whose fault a failed request is: it decides whether a request is retried, split, or held back, and whether the
/// jobs whose chunks it carried are retried, dead-lettered or given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Passing trouble (408, 429, 5xx, a timeout, a connection error): retry.
    Passing,
    /// What the request carried (413, or a 400/422 about an input: too long, a content policy): split it, and
    /// only the jobs whose chunks are refused alone fail.
    Inputs,
    /// The provider refuses every request alike (401, 403, 404, a 400/422 about another parameter, no answer
    /// for long, answers of the wrong dimension): no job is at fault; they wait for the provider.
    Provider,
    /// A refusal (400, 422, another 4xx, an unusable answer) whose words name neither: the pool asks the
    /// provider to embed a harmless input, and blames the inputs only if that succeeds.
    Unclear,
}

impl EmbedError {
    /// An error status with its body read as [`crate::refusal`] does.
    pub fn from_answer(status: u16, body: &str, retry_after: Option<Duration>) -> EmbedError {
        let ErrorBody { message, param, code } = refusal::read_error_body(body);
        EmbedError::Status { status, message, param, code, retry_after }
    }

    /// Whose fault the failure is.
    pub fn blame(&self) -> Blame {
        match self {
            EmbedError::Status { status, message, param, code, .. } => match status {
                408 | 429 | 500..=599 => Blame::Passing,
                401 | 402 | 403 | 404 | 405 | 407 | 410 | 415 => Blame::Provider,
                413 => Blame::Inputs,
                _ => {
                    let body = ErrorBody { message: message.clone(), param: param.clone(), code: code.clone() };
                    match refusal::judge(&body) {
                        Judgement::Input => Blame::Inputs,
                        Judgement::Provider => Blame::Provider,
                        Judgement::Unclear => Blame::Unclear,
                    }
                }
            },
            EmbedError::Timeout(_) | EmbedError::Transport { .. } | EmbedError::Internal(_) => Blame::Passing,
            EmbedError::InvalidResponse(_) => Blame::Unclear,
            EmbedError::Config(_) | EmbedError::Unavailable(_) => Blame::Provider,
        }
    }

    /// Whether retrying the same request can help.
    pub fn class(&self) -> ErrorClass {
        match self.blame() {
            Blame::Passing => ErrorClass::Transient,
            Blame::Inputs | Blame::Provider | Blame::Unclear => ErrorClass::Permanent,
        }
    }

    /// Short machine-readable cause, for dead-letter headers and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            EmbedError::Unavailable(cause) => cause.reason(),
            EmbedError::Status { status: 429, .. } => "embedding_throttled",
            EmbedError::Status { status: 500..=599, .. } => "embedding_server_error",
            EmbedError::Status { status: 401 | 403 | 407, .. } => "embedding_unauthorized",
            EmbedError::Status { .. } if self.blame() == Blame::Provider => "embedding_misconfigured",
            EmbedError::Status { .. } => "embedding_rejected",
            EmbedError::Timeout(_) => "embedding_timeout",
            EmbedError::Transport { .. } => "embedding_unreachable",
            EmbedError::InvalidResponse(_) => "embedding_invalid_response",
            EmbedError::Config(_) => "embedding_config",
            EmbedError::Internal(_) => "embedding_internal",
        }
    }

    /// Whether the fault is inside this process ([`EmbedError::Internal`]): no job is to blame for it.
    pub fn is_internal(&self) -> bool {
        matches!(self, EmbedError::Internal(_))
    }

    /// How long the provider asked us to wait, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EmbedError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The provider's own answer: the cause of [`EmbedError::Unavailable`], else this error.
    pub fn answer(&self) -> &EmbedError {
        match self {
            EmbedError::Unavailable(cause) => cause.answer(),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, body: &str) -> EmbedError {
        EmbedError::from_answer(code, body, None)
    }

    #[test]
    fn statuses_are_classified_like_providers_behave() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(status(code, "").blame(), Blame::Passing, "{code}");
            assert_eq!(status(code, "").class(), ErrorClass::Transient, "{code}");
        }
        for code in [401, 403, 404] {
            assert_eq!(status(code, "").blame(), Blame::Provider, "{code}");
        }
        assert_eq!(status(413, "request too large").blame(), Blame::Inputs);
        for code in [400, 401, 403, 404, 413, 422] {
            assert_eq!(status(code, "x").class(), ErrorClass::Permanent, "{code}");
        }
    }

    /// The 400s that concern every request are the provider's; those about what one request carried are the
    /// inputs'; those that say neither are decided by the pool (the words are judged in `refusal.rs`).
    #[test]
    fn which_400s_are_provider_wide_and_which_are_about_an_input() {
        let about_a_parameter = status(400, r#"{"error":{"message":"Invalid dimensions","param":"dimensions"}}"#);
        assert_eq!(about_a_parameter.blame(), Blame::Provider);
        assert_eq!(about_a_parameter.reason(), "embedding_misconfigured");
        let unknown_model = status(422, r#"{"detail":[{"loc":["body","model"],"msg":"unknown model"}]}"#);
        assert_eq!(unknown_model.blame(), Blame::Provider);
        let content_policy = status(400, r#"{"error":{"message":"input 3 was refused by the content policy."}}"#);
        assert_eq!(content_policy.blame(), Blame::Inputs);
        assert_eq!(content_policy.reason(), "embedding_rejected");
        let too_long = status(400, r#"{"error":"Input validation error: must have less than 512 tokens"}"#);
        assert_eq!(too_long.blame(), Blame::Inputs);
        assert_eq!(status(400, "Bad Request").blame(), Blame::Unclear);
        assert_eq!(EmbedError::InvalidResponse("2 embeddings for 3 inputs".into()).blame(), Blame::Unclear);
    }

    #[test]
    fn a_fault_inside_the_pool_is_passing_trouble_not_the_providers() {
        let stopped = EmbedError::Internal("the embedding dispatcher has stopped".into());
        assert_eq!((stopped.blame(), stopped.class()), (Blame::Passing, ErrorClass::Transient));
        assert_eq!(stopped.reason(), "embedding_internal");
        assert!(stopped.is_internal());
        assert!(!EmbedError::Config("bad URL".into()).is_internal());
    }

    #[test]
    fn a_revoked_key_reads_as_one_line_with_the_providers_message() {
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-abc***","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let error = status(401, body);
        assert_eq!(error.to_string(), "embedding API answered 401: Incorrect API key provided: sk-abc***");
        assert_eq!(error.reason(), "embedding_unauthorized");
        let held = EmbedError::Unavailable(Box::new(error.clone()));
        assert_eq!(held.to_string(), error.to_string());
        assert_eq!((held.blame(), held.reason()), (Blame::Provider, "embedding_unauthorized"));
    }
}
