//! Moving a message out of the work queue: to a delay queue for a later retry, or to the dead-letter queue.
//! The original body travels byte for byte with Quern's headers; the publish is confirmed before the caller
//! acks the original, so a crash in between duplicates, never loses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use quern_core::{Failure, Topology};
use quern_queue::{headers, QueueError};

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
    headers::get_i64(delivery.properties.headers().as_ref(), headers::ATTEMPTS)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
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
        let properties = self.failure_properties(delivery, failed_attempts, failure);
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
        let mut properties = self.failure_properties(delivery, failed_attempts, failure);
        let mut table = properties.headers().clone().unwrap_or_default();
        headers::set_str(&mut table, headers::REASON_CLASS, failure.class.as_str());
        headers::set_str(&mut table, headers::REASON, &failure.reason);
        headers::set_i64(&mut table, headers::DEAD_AT_MS, now_ms());
        properties = properties.with_headers(table);
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

    /// The delivery's properties with the failure recorded in Quern's headers.
    fn failure_properties(&self, delivery: &Delivery, failed_attempts: u32, failure: &Failure) -> BasicProperties {
        let now = now_ms();
        let original = delivery.properties.headers().as_ref();
        let mut table = original.cloned().unwrap_or_else(FieldTable::default);
        let first_failure = headers::get_i64(original, headers::FIRST_FAILURE_AT_MS).unwrap_or(now);
        let (first_exchange, first_routing_key) = match &self.replay_to {
            Some((exchange, routing_key)) => (exchange.clone(), routing_key.clone()),
            None => (delivery.exchange.to_string(), delivery.routing_key.to_string()),
        };
        let exchange = headers::get_str(original, headers::ORIGINAL_EXCHANGE).unwrap_or(first_exchange);
        let routing_key = headers::get_str(original, headers::ORIGINAL_ROUTING_KEY).unwrap_or(first_routing_key);
        headers::set_i64(&mut table, headers::ATTEMPTS, i64::from(failed_attempts));
        headers::set_str(&mut table, headers::ERROR, &failure.detail);
        headers::set_i64(&mut table, headers::FIRST_FAILURE_AT_MS, first_failure);
        headers::set_i64(&mut table, headers::LAST_FAILURE_AT_MS, now);
        headers::set_str(&mut table, headers::WORKER_ID, &self.worker_id);
        headers::set_str(&mut table, headers::ORIGINAL_EXCHANGE, &exchange);
        headers::set_str(&mut table, headers::ORIGINAL_ROUTING_KEY, &routing_key);
        delivery.properties.clone().with_headers(table)
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
