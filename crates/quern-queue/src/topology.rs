//! Declaring Quern's exchanges and queues; safe to repeat from every producer, worker and CLI.
//!
//! Queue arguments can never change once a queue exists (a redeclare with others fails with
//! `PRECONDITION_FAILED`), so every argument the later failure-handling design needs is set from the start.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use quern_core::Topology;

use crate::QueueError;

/// Arguments of the ingest queue that operators may tune before the queue first exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueArguments {
    /// Deliveries after which the broker itself dead-letters a message (the backstop for a message that
    /// kills its worker before any ack or nack). Set explicitly: RabbitMQ 3.x has no default and 4.x drops
    /// messages past its default of 20 unless a dead-letter exchange is set, which we also set.
    pub delivery_limit: u32,
}

impl Default for QueueArguments {
    fn default() -> Self {
        QueueArguments { delivery_limit: 20 }
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Declares the work exchange, the ingest quorum queue and the dead-letter exchange and queue.
pub async fn declare_topology(channel: &Channel, topology: &Topology, args: QueueArguments) -> Result<(), QueueError> {
    let durable_exchange = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    let durable_queue = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };

    let work_exchange = topology.work_exchange();
    let dead_exchange = topology.dead_exchange();
    let ingest_queue = topology.ingest_queue();
    let dead_queue = topology.dead_queue();

    channel
        .exchange_declare(work_exchange.as_str().into(), ExchangeKind::Direct, durable_exchange, FieldTable::default())
        .await
        .map_err(QueueError::broker(format!("exchange.declare {work_exchange}")))?;
    channel
        .exchange_declare(dead_exchange.as_str().into(), ExchangeKind::Fanout, durable_exchange, FieldTable::default())
        .await
        .map_err(QueueError::broker(format!("exchange.declare {dead_exchange}")))?;

    let mut dead_args = FieldTable::default();
    dead_args.insert("x-queue-type".into(), long_string("quorum"));
    channel
        .queue_declare(dead_queue.as_str().into(), durable_queue, dead_args)
        .await
        .map_err(QueueError::broker(format!("queue.declare {dead_queue}")))?;
    channel
        .queue_bind(
            dead_queue.as_str().into(),
            dead_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(QueueError::broker(format!("queue.bind {dead_queue}")))?;

    let mut ingest_args = FieldTable::default();
    ingest_args.insert("x-queue-type".into(), long_string("quorum"));
    ingest_args.insert("x-delivery-limit".into(), AMQPValue::LongInt(args.delivery_limit as i32));
    ingest_args.insert("x-dead-letter-exchange".into(), long_string(&dead_exchange));
    // At-least-once dead-lettering: the broker keeps the message until the dead-letter queue confirms it.
    ingest_args.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
    ingest_args.insert("x-overflow".into(), long_string("reject-publish"));
    channel
        .queue_declare(ingest_queue.as_str().into(), durable_queue, ingest_args)
        .await
        .map_err(QueueError::broker(format!("queue.declare {ingest_queue}")))?;
    channel
        .queue_bind(
            ingest_queue.as_str().into(),
            work_exchange.as_str().into(),
            topology.ingest_routing_key().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(QueueError::broker(format!("queue.bind {ingest_queue}")))?;
    Ok(())
}

/// Declares one delay queue per retry tier. A message published to one (through the default exchange,
/// routing key = queue name) waits the tier's TTL, then is dead-lettered back to the work exchange with the
/// ingest routing key.
pub async fn declare_retry_queues(
    channel: &Channel,
    topology: &Topology,
    tiers: &[Duration],
) -> Result<(), QueueError> {
    let durable_queue = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    for tier in tiers {
        let queue = topology.retry_queue(*tier);
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(tier.as_millis()).unwrap_or(i64::MAX)),
        );
        args.insert("x-dead-letter-exchange".into(), long_string(&topology.work_exchange()));
        args.insert("x-dead-letter-routing-key".into(), long_string(topology.ingest_routing_key()));
        // Expired messages move only once the work queue has them: none is dropped on the way back.
        args.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
        args.insert("x-overflow".into(), long_string("reject-publish"));
        channel
            .queue_declare(queue.as_str().into(), durable_queue, args)
            .await
            .map_err(QueueError::broker(format!("queue.declare {queue}")))?;
    }
    Ok(())
}
