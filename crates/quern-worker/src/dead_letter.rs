//! Moving a message to the dead-letter queue: original body byte for byte, plus Quern's reason headers.
//! The publish is confirmed before the caller acks the original, so a crash in between duplicates, never loses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use quern_core::{ErrorClass, Topology};
use quern_queue::{headers, QueueError};

/// Publishes dead letters on a channel of its own, in confirm mode. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeadLetterPublisher {
    channel: Channel,
    exchange: String,
    worker_id: String,
    confirm_timeout: Duration,
}

/// Why a message is dead.
#[derive(Debug, Clone, Copy)]
pub struct DeadReason<'a> {
    /// Transient (retries exhausted) or permanent.
    pub class: ErrorClass,
    /// Short machine-readable cause.
    pub reason: &'a str,
    /// The message a person reads.
    pub detail: &'a str,
}

impl DeadLetterPublisher {
    /// Opens the publishing channel on `connection`.
    pub async fn open(connection: &Connection, topology: &Topology, worker_id: &str) -> Result<Self, QueueError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|source| QueueError::Broker { operation: "channel.open (dead letters)".into(), source })?;
        quern_queue::enable_confirms(&channel).await?;
        Ok(DeadLetterPublisher {
            channel,
            exchange: topology.dead_exchange(),
            worker_id: worker_id.to_owned(),
            confirm_timeout: quern_queue::DEFAULT_CONFIRM_TIMEOUT,
        })
    }

    /// Publishes `delivery`'s body with its properties and the reason headers; returns once confirmed.
    pub async fn publish(&self, delivery: &Delivery, why: DeadReason<'_>) -> Result<(), QueueError> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let original = delivery.properties.headers().as_ref();
        let mut table = original.cloned().unwrap_or_else(FieldTable::default);
        let attempts = headers::get_i64(original, headers::ATTEMPTS).unwrap_or(0) + 1;
        let first_failure = headers::get_i64(original, headers::FIRST_FAILURE_AT_MS).unwrap_or(now_ms);
        let exchange =
            headers::get_str(original, headers::ORIGINAL_EXCHANGE).unwrap_or_else(|| delivery.exchange.to_string());
        let routing_key = headers::get_str(original, headers::ORIGINAL_ROUTING_KEY)
            .unwrap_or_else(|| delivery.routing_key.to_string());
        headers::set_str(&mut table, headers::REASON_CLASS, why.class.as_str());
        headers::set_str(&mut table, headers::REASON, why.reason);
        headers::set_str(&mut table, headers::ERROR, why.detail);
        headers::set_i64(&mut table, headers::ATTEMPTS, attempts);
        headers::set_i64(&mut table, headers::FIRST_FAILURE_AT_MS, first_failure);
        headers::set_i64(&mut table, headers::LAST_FAILURE_AT_MS, now_ms);
        headers::set_i64(&mut table, headers::DEAD_AT_MS, now_ms);
        headers::set_str(&mut table, headers::WORKER_ID, &self.worker_id);
        headers::set_str(&mut table, headers::ORIGINAL_EXCHANGE, &exchange);
        headers::set_str(&mut table, headers::ORIGINAL_ROUTING_KEY, &routing_key);
        let properties = delivery.properties.clone().with_headers(table);
        quern_queue::publish(&self.channel, &self.exchange, "", &delivery.data, properties)
            .await?
            .wait(self.confirm_timeout)
            .await
    }
}
