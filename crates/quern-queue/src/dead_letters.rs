//! Reading the dead-letter queue and re-driving its messages, without losing any or reordering those that stay.
//!
//! A [`DeadLetterScan`] reads the messages ready when it starts through ONE consumer, removes (acks) the ones the
//! caller has dealt with and holds the others unacked; [`DeadLetterScan::release`] gives every held message back
//! with a single `basic.nack(multiple, requeue)`.
//!
//! Why exactly that, measured on RabbitMQ 3.10.8 quorum queues (and read in its `rabbit_fifo`):
//! - a message given back goes to the TAIL of the queue (without a delivery limit a return is re-appended to the
//!   log as `#requeue{}`), behind whatever was never read: so the scan reads the whole queue (up to [`SCAN_CAP`]);
//! - the returns of one `#return{}` command are re-appended sorted by message id, but every `basic.get` is a
//!   consumer of its own, and once the channel has more than 32 commands in flight the broker's client code
//!   stashes them in a map per consumer: with `basic.get`, nacking held messages one by one, or in one
//!   `nack(multiple)`, or closing the channel returned them out of order (2 runs in 6 for one-by-one nacks);
//! - with one consumer and one `nack(multiple)` there is one command and one sort: in order every time. Closing
//!   the channel (a crash) also returned them in order with one consumer; nacking one by one did not.
//!
//! RabbitMQ 4 documents nacked messages as going back to their original position, which this keeps too. A dead
//! letter queue must keep having no `x-delivery-limit`: with one, returns take another path (`maps:fold`, not
//! sorted) and every scan counts as a delivery, so a message listed often enough would be dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use quern_core::Topology;

use crate::{headers, QueueError};

/// Most messages one scan reads. The consumer's prefetch is set to the number to read, because held messages
/// count against it, so up to this many bodies may sit in memory at once.
pub const SCAN_CAP: usize = 10_000;

/// How long to wait for the next expected delivery before giving up on it (another consumer took it).
const IDLE: Duration = Duration::from_secs(5);

/// The broker's count of this queue's redeliveries to us; it describes the dead-letter queue, not the job.
pub const DELIVERY_COUNT: &str = "x-delivery-count";

/// One message read from the dead-letter queue, still unacked on the scan's channel.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Tag of this delivery on the scan's channel.
    pub delivery_tag: u64,
    /// The properties as the worker published them (headers included).
    pub properties: BasicProperties,
    /// The body, byte for byte as first published.
    pub body: Vec<u8>,
}

/// Where a replayed message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayTarget {
    /// Exchange to publish to (`""` is the default exchange).
    pub exchange: String,
    /// Routing key (a queue name on the default exchange).
    pub routing_key: String,
}

impl DeadLetter {
    /// The message's headers, if any.
    pub fn headers(&self) -> Option<&FieldTable> {
        self.properties.headers().as_ref()
    }

    /// The AMQP `message_id` (Quern's producer sets it to the job id).
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id().as_ref().map(ShortString::as_str)
    }

    /// A string header.
    pub fn header_str(&self, key: &str) -> Option<String> {
        headers::get_str(self.headers(), key)
    }

    /// An integer header.
    pub fn header_i64(&self, key: &str) -> Option<i64> {
        headers::get_i64(self.headers(), key)
    }

    /// How many times `quern dlq replay` has already sent this message back (0 when never).
    pub fn replay_count(&self) -> i64 {
        self.header_i64(headers::REPLAY_COUNT).unwrap_or(0)
    }

    /// When the message died, in ms since the epoch: the dead-at header, else the last failure.
    pub fn dead_at_ms(&self) -> Option<i64> {
        self.header_i64(headers::DEAD_AT_MS).or_else(|| self.header_i64(headers::LAST_FAILURE_AT_MS))
    }

    /// Where a replay sends the message: `to_queue` through the default exchange if given, else the original
    /// exchange and routing key from the headers (default: the work exchange with the ingest routing key).
    pub fn replay_target(&self, topology: &Topology, to_queue: Option<&str>) -> ReplayTarget {
        if let Some(queue) = to_queue {
            return ReplayTarget { exchange: String::new(), routing_key: queue.to_owned() };
        }
        ReplayTarget {
            exchange: self.header_str(headers::ORIGINAL_EXCHANGE).unwrap_or_else(|| topology.work_exchange()),
            routing_key: self
                .header_str(headers::ORIGINAL_ROUTING_KEY)
                .unwrap_or_else(|| topology.ingest_routing_key().to_owned()),
        }
    }

    /// The properties of the replayed message: every property kept (message id, content type, …), the
    /// headers of the dead-letter trip removed so attempts start afresh, the replay count raised by one.
    pub fn replay_properties(&self, now_ms: i64) -> BasicProperties {
        let kept: BTreeMap<ShortString, AMQPValue> = self
            .headers()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .filter(|(key, _)| {
                        let key = key.as_str();
                        !headers::DEAD_LETTER_HEADERS.contains(&key) && key != DELIVERY_COUNT
                    })
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut table = FieldTable::from(kept);
        headers::set_i64(&mut table, headers::REPLAY_COUNT, self.replay_count() + 1);
        headers::set_i64(&mut table, headers::REPLAYED_AT_MS, now_ms);
        self.properties.clone().with_headers(table)
    }
}

/// One pass over the dead-letter queue on a channel of its own, with one consumer.
#[derive(Debug)]
pub struct DeadLetterScan {
    channel: Channel,
    queue: String,
    consumer: Option<Consumer>,
    expected: usize,
    read: usize,
    /// Highest held delivery tag: the nack must name a tag still unacked, or the broker closes the channel.
    last_held: Option<u64>,
    left_unread: usize,
}

impl DeadLetterScan {
    /// Opens a channel, checks that the dead-letter queue exists (never creating it: a wrong prefix should be an
    /// error, not a new empty queue) and starts consuming the messages ready now, up to [`SCAN_CAP`].
    pub async fn open(connection: &Connection, topology: &Topology) -> Result<Self, QueueError> {
        let queue = topology.dead_queue();
        let channel = connection.create_channel().await.map_err(QueueError::broker("channel.open (dead letters)"))?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declared = channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .map_err(QueueError::broker(format!("queue.declare (passive) {queue}")))?;
        let ready = declared.message_count() as usize;
        let expected = ready.min(SCAN_CAP);
        let mut scan = DeadLetterScan {
            channel,
            queue,
            consumer: None,
            expected,
            read: 0,
            last_held: None,
            left_unread: ready - expected,
        };
        if expected > 0 {
            // Held messages count against the prefetch: it must cover everything the scan may hold.
            scan.channel
                .basic_qos(expected as u16, BasicQosOptions { global: false })
                .await
                .map_err(QueueError::broker("basic.qos (dead letters)"))?;
            let consumer = scan
                .channel
                .basic_consume(
                    scan.queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(QueueError::broker(format!("basic.consume {}", scan.queue)))?;
            scan.consumer = Some(consumer);
        }
        Ok(scan)
    }

    /// The next message, or `None` once every message ready at the start has been read.
    pub async fn next(&mut self) -> Result<Option<DeadLetter>, QueueError> {
        if self.read >= self.expected {
            self.stop().await?;
            return Ok(None);
        }
        let Some(consumer) = self.consumer.as_mut() else { return Ok(None) };
        let delivery = match tokio::time::timeout(IDLE, consumer.next()).await {
            Ok(Some(Ok(delivery))) => delivery,
            Ok(Some(Err(source))) => {
                return Err(QueueError::Broker { operation: format!("consume {}", self.queue), source })
            }
            Ok(None) => {
                tracing::warn!(queue = %self.queue, "the broker cancelled the dead-letter consumer");
                self.consumer = None;
                return Ok(None);
            }
            Err(_) => {
                tracing::warn!(queue = %self.queue, read = self.read, expected = self.expected, "no more dead letters arrived; another consumer may have taken some");
                self.stop().await?;
                return Ok(None);
            }
        };
        self.read += 1;
        Ok(Some(DeadLetter {
            delivery_tag: delivery.delivery_tag,
            properties: delivery.properties,
            body: delivery.data,
        }))
    }

    /// Cancels the consumer and holds whatever it had already delivered (messages that arrived during the scan).
    async fn stop(&mut self) -> Result<(), QueueError> {
        let Some(mut consumer) = self.consumer.take() else { return Ok(()) };
        self.channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .map_err(QueueError::broker(format!("basic.cancel on {}", self.queue)))?;
        // After cancel-ok the stream yields what was already delivered, then ends.
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.map_err(QueueError::broker(format!("consume {}", self.queue)))?;
            self.hold(delivery.delivery_tag);
        }
        Ok(())
    }

    /// Keeps the message in the queue: it is given back, in its place, by [`DeadLetterScan::release`].
    pub fn hold(&mut self, delivery_tag: u64) {
        self.last_held = self.last_held.max(Some(delivery_tag));
    }

    /// Removes the message from the queue for good (acks it).
    pub async fn remove(&mut self, delivery_tag: u64) -> Result<(), QueueError> {
        self.channel
            .basic_ack(delivery_tag, BasicAckOptions { multiple: false })
            .await
            .map_err(QueueError::broker(format!("basic.ack on {}", self.queue)))
    }

    /// Messages read so far.
    pub fn read(&self) -> usize {
        self.read
    }

    /// Messages that were ready but beyond [`SCAN_CAP`], so not read by this scan.
    pub fn left_unread(&self) -> usize {
        self.left_unread
    }

    /// Gives every held message back with one `nack(multiple, requeue)` (see the module docs for why one), then
    /// closes the channel. Call it after every removal: acks sent earlier are applied first.
    pub async fn release(mut self) -> Result<(), QueueError> {
        self.stop().await?;
        if let Some(last_held) = self.last_held {
            // Covers every unacked delivery up to it: exactly the held ones, since all others were acked.
            self.channel
                .basic_nack(last_held, BasicNackOptions { multiple: true, requeue: true })
                .await
                .map_err(QueueError::broker(format!("basic.nack on {}", self.queue)))?;
        }
        // The close handshake comes after the nack on the wire, so the broker has applied it.
        self.channel
            .close(200, "dead-letter scan done".into())
            .await
            .map_err(QueueError::broker(format!("channel.close after scanning {}", self.queue)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: FieldTable) -> DeadLetter {
        DeadLetter {
            delivery_tag: 1,
            properties: BasicProperties::default()
                .with_message_id("m-1".into())
                .with_content_type("application/json".into())
                .with_headers(headers),
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn replay_strips_the_dead_letter_trip_and_counts_the_replay() {
        let mut table = FieldTable::default();
        for key in headers::DEAD_LETTER_HEADERS {
            headers::set_str(&mut table, key, "x");
        }
        headers::set_i64(&mut table, headers::ATTEMPTS, 5);
        headers::set_i64(&mut table, headers::REPLAY_COUNT, 2);
        headers::set_i64(&mut table, DELIVERY_COUNT, 3);
        headers::set_i64(&mut table, headers::CONTRACT, 1);
        headers::set_str(&mut table, headers::ORIGINAL_EXCHANGE, "ex");
        let replayed = letter(table).replay_properties(1234);
        let out = replayed.headers().as_ref();
        for key in headers::DEAD_LETTER_HEADERS {
            assert!(!out.is_some_and(|t| t.contains_key(key)), "{key} kept");
        }
        assert!(!out.is_some_and(|t| t.contains_key(DELIVERY_COUNT)));
        assert_eq!(headers::get_i64(out, headers::REPLAY_COUNT), Some(3));
        assert_eq!(headers::get_i64(out, headers::REPLAYED_AT_MS), Some(1234));
        assert_eq!(headers::get_i64(out, headers::CONTRACT), Some(1));
        assert_eq!(headers::get_str(out, headers::ORIGINAL_EXCHANGE).as_deref(), Some("ex"));
        assert_eq!(replayed.message_id().as_ref().map(ShortString::as_str), Some("m-1"));
        assert_eq!(replayed.content_type().as_ref().map(ShortString::as_str), Some("application/json"));
    }

    #[test]
    fn target_defaults_to_the_work_exchange_and_ingest() {
        let topology = Topology::new("t").expect("prefix");
        let plain = letter(FieldTable::default());
        assert_eq!(plain.replay_count(), 0);
        assert_eq!(
            plain.replay_target(&topology, None),
            ReplayTarget { exchange: "t".into(), routing_key: "ingest".into() }
        );
        assert_eq!(
            plain.replay_target(&topology, Some("q")),
            ReplayTarget { exchange: String::new(), routing_key: "q".into() }
        );
        let mut table = FieldTable::default();
        headers::set_str(&mut table, headers::ORIGINAL_EXCHANGE, "other");
        headers::set_str(&mut table, headers::ORIGINAL_ROUTING_KEY, "rk");
        headers::set_i64(&mut table, headers::LAST_FAILURE_AT_MS, 7);
        let routed = letter(table);
        assert_eq!(
            routed.replay_target(&topology, None),
            ReplayTarget { exchange: "other".into(), routing_key: "rk".into() }
        );
        assert_eq!(routed.dead_at_ms(), Some(7), "falls back to the last failure");
    }
}
