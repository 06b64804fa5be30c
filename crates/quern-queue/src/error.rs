//! Broker errors, classified: what a retry can fix and what it cannot.

use quern_core::ErrorClass;

/// A failure talking to RabbitMQ.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Could not open the connection (the URL is shown with its password redacted).
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect {
        /// The broker URL, password redacted.
        url: String,
        /// What lapin reported.
        source: lapin::Error,
    },
    /// A channel or protocol operation failed; the channel is usually gone afterwards.
    #[error("RabbitMQ {operation} failed: {source}")]
    Broker {
        /// What was being done, e.g. `queue.declare quern.ingest`.
        operation: String,
        /// What lapin reported.
        source: lapin::Error,
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
            QueueError::Unroutable { .. } | QueueError::ConfirmNotRequested => ErrorClass::Permanent,
        }
    }

    pub(crate) fn broker(operation: impl Into<String>) -> impl FnOnce(lapin::Error) -> QueueError {
        let operation = operation.into();
        move |source| QueueError::Broker { operation, source }
    }
}
