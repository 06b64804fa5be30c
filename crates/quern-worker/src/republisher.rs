//! Moving a message out of the work queue: to a delay queue for a later retry, or to the dead-letter queue.
//! The original body travels byte for byte with Quern's headers (written by `quern_queue::dead_letters`); the
//! publish is confirmed before the caller acks the original, so a crash in between duplicates, never loses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery;
use lapin::{BasicProperties, Channel, Connection};
use quern_core::{Failure, Topology};
use quern_queue::dead_letters::{self, FailedAttempt};
use quern_queue::QueueError;

/// Publishes retries and dead letters on a channel of its own, in confirm mode. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Republisher {
    channel: Channel,
    topology: Topology,
    worker_id: String,
    confirm_timeout: Duration,
    /// Where a replay sends the messages this worker moves, when not where they were first published.
    replay_to: Option<(String, String)>,
}

/// Failed attempts recorded on the message so far (0 for a fresh job).
pub fn failed_attempts(delivery: &Delivery) -> u32 {
    dead_letters::failed_attempts(delivery.properties.headers().as_ref())
}

impl Republisher {
    /// Opens the publishing channel on `connection`.
    pub async fn open(connection: &Connection, topology: &Topology, worker_id: &str) -> Result<Self, QueueError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|cause| QueueError::Broker { operation: "channel.open (republisher)".into(), cause })?;
        quern_queue::enable_confirms(&channel).await?;
        Ok(Republisher {
            channel,
            topology: topology.clone(),
            worker_id: worker_id.to_owned(),
            confirm_timeout: quern_queue::DEFAULT_CONFIRM_TIMEOUT,
            replay_to: None,
        })
    }

    /// Records `exchange` and `routing_key` as the place a replay sends the messages this worker moves, instead
    /// of where they were first published (a shadow run's copies must not go to the legacy worker again).
    pub fn replaying_to(mut self, exchange: &str, routing_key: &str) -> Republisher {
        self.replay_to = Some((exchange.to_owned(), routing_key.to_owned()));
        self
    }

    /// Parks the message in the delay queue of `after`; it returns to the work queue when the delay is over.
    pub async fn retry_later(
        &self,
        delivery: &Delivery,
        after: Duration,
        failed_attempts: u32,
        failure: &Failure,
    ) -> Result<(), QueueError> {
        let original = delivery.properties.headers().as_ref();
        let table = dead_letters::retry_headers(original, &self.attempt(delivery, failed_attempts, failure));
        let properties = delivery.properties.clone().with_headers(table);
        // The default exchange routes to the queue named by the routing key.
        self.publish("", &self.topology.retry_queue(after), &delivery.data, properties).await
    }

    /// Moves the message to the dead-letter queue with its reason.
    pub async fn dead_letter(
        &self,
        delivery: &Delivery,
        failed_attempts: u32,
        failure: &Failure,
    ) -> Result<(), QueueError> {
        let original = delivery.properties.headers().as_ref();
        let table = dead_letters::dead_letter_headers(original, &self.attempt(delivery, failed_attempts, failure));
        let properties = delivery.properties.clone().with_headers(table);
        self.publish(&self.topology.dead_exchange(), "", &delivery.data, properties).await
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        quern_queue::publish(&self.channel, exchange, routing_key, body, properties)
            .await?
            .wait(self.confirm_timeout)
            .await
    }

    /// The failed attempt as the headers record it: replays go where the message was first published, or where
    /// [`Republisher::replaying_to`] says.
    fn attempt<'a>(&'a self, delivery: &'a Delivery, failed_attempts: u32, failure: &'a Failure) -> FailedAttempt<'a> {
        let (exchange, routing_key) = match &self.replay_to {
            Some((exchange, routing_key)) => (exchange.as_str(), routing_key.as_str()),
            None => (delivery.exchange.as_str(), delivery.routing_key.as_str()),
        };
        FailedAttempt { failure, failed_attempts, worker_id: &self.worker_id, exchange, routing_key, now_ms: now_ms() }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
