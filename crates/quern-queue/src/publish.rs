//! Publishing with proof: persistent, mandatory messages whose broker confirm is awaited.
//!
//! A publish is only done when the broker acks it without returning it. `basic_publish` hands back a
//! [`PendingConfirm`] at once, so callers can send a whole batch and then await the confirms together.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel};
use lapin::{Confirmation, PublisherConfirm};

use crate::QueueError;

/// How long to wait for a confirm before calling the publish failed (a blocked broker never answers).
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Puts `channel` in confirm mode; every publish on it is then acked or nacked by the broker.
pub async fn enable_confirms(channel: &Channel) -> Result<(), QueueError> {
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(QueueError::broker("confirm.select"))
}

/// A published message whose confirm has not been awaited yet.
#[derive(Debug)]
#[must_use = "a publish is not done until its confirm is awaited"]
pub struct PendingConfirm {
    confirm: PublisherConfirm,
    exchange: String,
    routing_key: String,
}

/// Publishes `body` as a persistent (delivery mode 2), mandatory message; the properties' delivery mode is forced.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<PendingConfirm, QueueError> {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel
        .basic_publish(exchange.into(), routing_key.into(), options, body, properties.with_delivery_mode(2))
        .await
        .map_err(QueueError::broker(format!("basic.publish to {exchange}")))?;
    Ok(PendingConfirm { confirm, exchange: exchange.to_owned(), routing_key: routing_key.to_owned() })
}

impl PendingConfirm {
    /// Waits for the broker's verdict: `Ok` only for an ack of a message that was routed.
    pub async fn wait(self, timeout: Duration) -> Result<(), QueueError> {
        let confirmation = tokio::time::timeout(timeout, self.confirm)
            .await
            .map_err(|_| QueueError::ConfirmTimeout(timeout))?
            .map_err(QueueError::broker(format!("publisher confirm from {}", self.exchange)))?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            // With `mandatory`, an unroutable message is returned before it is acked.
            Confirmation::Ack(Some(returned)) => Err(QueueError::Unroutable {
                exchange: self.exchange,
                routing_key: self.routing_key,
                reply: format!("{} {}", returned.reply_code, returned.reply_text),
            }),
            Confirmation::Nack(_) => Err(QueueError::Nacked { exchange: self.exchange }),
            Confirmation::NotRequested => Err(QueueError::ConfirmNotRequested),
        }
    }
}
