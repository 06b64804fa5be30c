//! Broker errors, classified: what a retry can fix and what it cannot.

use quern_core::ErrorClass;

/// A failure talking to RabbitMQ.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Could not open the connection (the URL is shown with its password redacted). The cause is in the
    /// message, in plain words, and not repeated by `source()`: lapin's own chain says it three times.
    #[error("cannot connect to RabbitMQ at {url}: {reason}")]
    Connect {
        /// The broker URL, password redacted.
        url: String,
        /// Why, e.g. `connection refused` or the broker's `ACCESS_REFUSED` reply.
        reason: String,
    },
    /// The broker URL cannot be parsed: no retry can fix it. The message shows the URL only when its password
    /// can be told apart and hidden.
    #[error("invalid RabbitMQ URL: {0}")]
    InvalidUrl(String),
    /// The URL's TLS parameters cannot be used (a missing file, a key that is not the certificate's, an unknown
    /// `verify` value): no retry can fix them. A refused certificate during the handshake is a [`Connect`]
    /// error instead, since the broker's side may change.
    ///
    /// [`Connect`]: QueueError::Connect
    #[error("invalid RabbitMQ TLS settings: {0}")]
    Tls(String),
    /// A channel or protocol operation failed; the channel is usually gone afterwards.
    #[error("RabbitMQ {operation} failed: {}", describe(cause))]
    Broker {
        /// What was being done, e.g. `queue.declare quern.ingest`.
        operation: String,
        /// What lapin reported: told in the message, not returned by `source()`, so `{:#}` says it once.
        cause: lapin::Error,
    },
    /// The broker refused to take responsibility for a message.
    #[error("RabbitMQ nacked the message published to `{exchange}`")]
    Nacked {
        /// Target exchange.
        exchange: String,
    },
    /// The message matched no queue (published with `mandatory`, so the broker handed it back).
    #[error("message to exchange `{exchange}` with routing key `{routing_key}` was unroutable: {reply}")]
    Unroutable {
        /// Target exchange.
        exchange: String,
        /// Routing key used.
        routing_key: String,
        /// The broker's reply code and text.
        reply: String,
    },
    /// The channel was not in confirm mode, so nothing proves the broker holds the message.
    #[error("publisher confirms were not enabled on the channel; refusing to assume delivery")]
    ConfirmNotRequested,
    /// No confirm arrived in time (a blocked broker, a lost connection).
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(std::time::Duration),
}

impl QueueError {
    /// Whether retrying (after reconnecting) can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            QueueError::Connect { .. }
            | QueueError::Broker { .. }
            | QueueError::Nacked { .. }
            | QueueError::ConfirmTimeout(_) => ErrorClass::Transient,
            // Publishing again to the same place gives the same answer.
            QueueError::Unroutable { .. }
            | QueueError::ConfirmNotRequested
            | QueueError::InvalidUrl(_)
            | QueueError::Tls(_) => ErrorClass::Permanent,
        }
    }

    pub(crate) fn broker(operation: impl Into<String>) -> impl FnOnce(lapin::Error) -> QueueError {
        let operation = operation.into();
        move |cause| QueueError::Broker { operation, cause }
    }
}

/// A lapin error in a few words: an I/O failure as the operating system names it, without lapin's `IO error:`
/// prefix and the `(os error N)` suffix; a broker's refusal as the broker words it (`ACCESS_REFUSED - Login was
/// refused ...`, not "protocol error: AMQP soft error: ACCESS-REFUSED: ACCESS_REFUSED - ..."); anything else as
/// lapin says it.
pub(crate) fn describe(error: &lapin::Error) -> String {
    match error.kind() {
        lapin::ErrorKind::IOError(io) => quern_core::error_text::io_error(io),
        lapin::ErrorKind::ProtocolError(amqp) => amqp.get_message().as_str().trim_end_matches('.').to_owned(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_read_as_plain_words() {
        let broker = QueueError::Broker {
            operation: "queue.declare q".into(),
            cause: lapin::Error::from(std::io::Error::from_raw_os_error(104)),
        };
        assert_eq!(broker.to_string(), "RabbitMQ queue.declare q failed: connection reset by peer");
    }
}
