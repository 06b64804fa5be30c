//! Declaring Quern's exchanges and queues; safe to repeat from every producer, worker and CLI.
//!
//! Queue arguments can never change once a queue exists: a redeclare with any other quorum-queue argument
//! (`x-delivery-limit`, `x-overflow`, `x-dead-letter-*`, `x-message-ttl`, … — added, removed or changed) fails
//! with `PRECONDITION_FAILED` and closes the channel. So the tables below are frozen: each one is what
//! existing deployments already have, and changing one would stop every worker of such a deployment from
//! starting. Why each is safe on RabbitMQ 3.x and 4.x, with the broker source that says so: docs/brokers.md.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};
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

/// Arguments of the ingest queue: a quorum queue whose delivery limit dead-letters, at least once, to the
/// dead exchange. At-least-once dead-lettering only works with `x-overflow=reject-publish` (3.10 to 4.2 fall
/// back to at-most-once otherwise).
pub fn ingest_queue_arguments(topology: &Topology, args: QueueArguments) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert("x-queue-type".into(), long_string("quorum"));
    table.insert("x-delivery-limit".into(), AMQPValue::LongInt(args.delivery_limit as i32));
    table.insert("x-dead-letter-exchange".into(), long_string(&topology.dead_exchange()));
    // The broker keeps the message until the dead-letter queue has confirmed it.
    table.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
    table.insert("x-overflow".into(), long_string("reject-publish"));
    table
}

/// Arguments of the dead-letter queue: a quorum queue and nothing else.
///
/// In particular no `x-delivery-limit`, although RabbitMQ 4 then applies its default of 20, because no value
/// is safe on both major versions: 3.x takes `-1` literally and drops a message the first time it is given
/// back, 4.x reads it as "no limit", and any positive limit sends 3.x returns down an unsorted path. Adding
/// the argument now would also break every existing deployment (see the module docs). The dead letters are
/// kept safe by the reader instead, which never lets a message's delivery count approach a limit
/// ([`crate::dead_letters`]).
pub fn dead_queue_arguments() -> FieldTable {
    let mut table = FieldTable::default();
    table.insert("x-queue-type".into(), long_string("quorum"));
    table
}

/// Arguments of the delay queue of one retry tier: a queue-level TTL (every message expires at the head,
/// in order), then at-least-once dead-lettering back to the work exchange with the ingest routing key.
///
/// No delivery limit: nothing consumes a delay queue, so the one RabbitMQ 4 applies by default never counts.
pub fn retry_queue_arguments(topology: &Topology, tier: Duration) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert("x-queue-type".into(), long_string("quorum"));
    table.insert("x-message-ttl".into(), AMQPValue::LongLongInt(i64::try_from(tier.as_millis()).unwrap_or(i64::MAX)));
    table.insert("x-dead-letter-exchange".into(), long_string(&topology.work_exchange()));
    table.insert("x-dead-letter-routing-key".into(), long_string(topology.ingest_routing_key()));
    // Expired messages move only once the work queue has them: none is dropped on the way back.
    table.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
    table.insert("x-overflow".into(), long_string("reject-publish"));
    table
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

    channel
        .queue_declare(dead_queue.as_str().into(), durable_queue, dead_queue_arguments())
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

    channel
        .queue_declare(ingest_queue.as_str().into(), durable_queue, ingest_queue_arguments(topology, args))
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
        channel
            .queue_declare(queue.as_str().into(), durable_queue, retry_queue_arguments(topology, *tier))
            .await
            .map_err(QueueError::broker(format!("queue.declare {queue}")))?;
    }
    Ok(())
}

/// Makes sure the Celery queue `queue` exists. One that exists is used as it is: Celery, or its operators, chose
/// its arguments, and a declare with others would be refused. A missing one is declared as Celery (kombu)
/// declares a routed queue: a durable classic queue bound to the durable direct exchange `exchange` with
/// `routing_key`; so whichever of Celery and Quern comes first, the other finds what it would have declared.
pub async fn declare_celery_queue(
    connection: &Connection,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<(), QueueError> {
    let depth = crate::depth::queue_depths(connection, &[queue.to_owned()]).await?;
    if depth.first().is_some_and(|d| d.exists()) {
        return Ok(());
    }
    let channel =
        connection.create_channel().await.map_err(QueueError::broker("channel.open (Celery queue declare)"))?;
    declare_bound_queue(&channel, queue, FieldTable::default(), exchange, routing_key).await?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Declares `queue`, Quern's own copy of what is routed to `exchange` with `routing_key` (a shadow run's copy of
/// a Celery queue's messages), with `arguments`, and binds it there.
pub async fn declare_copy_queue(
    channel: &Channel,
    queue: &str,
    arguments: FieldTable,
    exchange: &str,
    routing_key: &str,
) -> Result<(), QueueError> {
    declare_bound_queue(channel, queue, arguments, exchange, routing_key).await
}

/// Declares the durable `queue` with `arguments` and, unless `exchange` is the default one (`""`, to which nothing
/// can be bound), binds it to `exchange` with `routing_key`, declaring that as Celery declares it (durable, direct)
/// so either side may come first.
async fn declare_bound_queue(
    channel: &Channel,
    queue: &str,
    arguments: FieldTable,
    exchange: &str,
    routing_key: &str,
) -> Result<(), QueueError> {
    let durable_exchange = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    let durable_queue = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel
        .queue_declare(queue.into(), durable_queue, arguments)
        .await
        .map_err(QueueError::broker(format!("queue.declare {queue}")))?;
    if exchange.is_empty() {
        return Ok(());
    }
    channel
        .exchange_declare(exchange.into(), ExchangeKind::Direct, durable_exchange, FieldTable::default())
        .await
        .map_err(QueueError::broker(format!("exchange.declare {exchange} (where Celery publishes the tasks)")))?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(QueueError::broker(format!("queue.bind {queue} to {exchange}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(table: &FieldTable) -> Vec<&str> {
        table.inner().keys().map(|k| k.as_str()).collect()
    }

    #[test]
    fn the_declared_arguments_are_the_ones_deployments_already_have() {
        let topology = Topology::new("t").expect("prefix");
        // Any change here makes the broker refuse the redeclare of an existing queue: see docs/brokers.md.
        assert_eq!(keys(&dead_queue_arguments()), ["x-queue-type"]);
        assert_eq!(
            keys(&ingest_queue_arguments(&topology, QueueArguments::default())),
            ["x-dead-letter-exchange", "x-dead-letter-strategy", "x-delivery-limit", "x-overflow", "x-queue-type"]
        );
        assert_eq!(
            ingest_queue_arguments(&topology, QueueArguments::default()).inner().get("x-delivery-limit"),
            Some(&AMQPValue::LongInt(20))
        );
        let retry = retry_queue_arguments(&topology, Duration::from_secs(10));
        assert_eq!(
            keys(&retry),
            [
                "x-dead-letter-exchange",
                "x-dead-letter-routing-key",
                "x-dead-letter-strategy",
                "x-message-ttl",
                "x-overflow",
                "x-queue-type"
            ]
        );
        assert_eq!(retry.inner().get("x-message-ttl"), Some(&AMQPValue::LongLongInt(10_000)));
        assert!(!retry.contains_key("x-delivery-limit"));
    }
}
