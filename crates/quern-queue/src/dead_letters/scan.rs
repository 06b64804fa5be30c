//! The [`DeadLetterScan`]: one pass over the dead-letter queue through one consumer, removing (acking) what the
//! caller dealt with and keeping everything else in its place when released (returned, or renewed: `renew`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use quern_core::Topology;

use super::letter::DeadLetter;
use super::renew::{publish_copies, Renewal, ScanLimits, ToCopy};
use crate::QueueError;

/// Most messages one scan reads. The consumer's prefetch is set to the number to read, because held messages
/// count against it, so up to this many bodies may sit in memory at once.
pub const SCAN_CAP: usize = 10_000;

/// How long to wait for the next expected delivery before giving up on it (another consumer took it).
const IDLE: Duration = Duration::from_secs(5);

/// How long [`DeadLetterScan::release`] waits for the broker to apply the returns it sent.
const RETURNS_APPLIED: Duration = Duration::from_secs(10);

/// What [`DeadLetterScan::release`] did with the messages the scan kept.
#[derive(Debug)]
pub struct Released {
    /// Messages kept in the queue (returned or renewed): all those read and not removed.
    pub kept: usize,
    /// The highest `x-delivery-count` among them when they were read.
    pub highest_delivery_count: i64,
    /// Whether they were renewed.
    pub renewal: Renewal,
}

/// A delivery the scan has not removed: it stays in the queue when the scan is released.
#[derive(Debug)]
struct Kept {
    delivery_count: i64,
    /// The message, for renewal, while the scan keeps copies.
    copy: Option<(BasicProperties, Vec<u8>)>,
}

/// One pass over the dead-letter queue on a channel of its own, with one consumer.
#[derive(Debug)]
pub struct DeadLetterScan {
    channel: Channel,
    queue: String,
    consumer: Option<Consumer>,
    limits: ScanLimits,
    expected: usize,
    read: usize,
    left_unread: usize,
    /// Every delivery not removed, by delivery tag (so in queue order).
    kept: BTreeMap<u64, Kept>,
    /// Whether `kept` still holds every kept message's copy, and the bytes those copies take.
    copying: bool,
    copied_bytes: usize,
}

impl DeadLetterScan {
    /// Opens a channel, checks that the dead-letter queue exists (never creating it: a wrong prefix should be an
    /// error, not a new empty queue) and starts consuming the messages ready now, up to [`SCAN_CAP`].
    pub async fn open(connection: &Connection, topology: &Topology) -> Result<Self, QueueError> {
        DeadLetterScan::open_with(connection, topology, ScanLimits::default()).await
    }

    /// [`DeadLetterScan::open`] with other renewal limits.
    pub async fn open_with(
        connection: &Connection,
        topology: &Topology,
        limits: ScanLimits,
    ) -> Result<Self, QueueError> {
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
            limits,
            expected,
            read: 0,
            left_unread: ready - expected,
            kept: BTreeMap::new(),
            copying: true,
            copied_bytes: 0,
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

    /// The next message, or `None` once every message ready at the start has been read. The message stays in
    /// the queue unless the caller removes it.
    pub async fn next(&mut self) -> Result<Option<DeadLetter>, QueueError> {
        if self.read >= self.expected {
            self.stop().await?;
            return Ok(None);
        }
        let Some(consumer) = self.consumer.as_mut() else { return Ok(None) };
        let delivery = match tokio::time::timeout(IDLE, consumer.next()).await {
            Ok(Some(Ok(delivery))) => delivery,
            Ok(Some(Err(source))) => {
                return Err(QueueError::Broker { operation: format!("consume {}", self.queue), cause: source })
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
        Ok(Some(self.keep(delivery)))
    }

    /// Records a delivery as kept (with a copy while the scan keeps them) and hands it out.
    fn keep(&mut self, delivery: Delivery) -> DeadLetter {
        let letter =
            DeadLetter { delivery_tag: delivery.delivery_tag, properties: delivery.properties, body: delivery.data };
        self.copied_bytes += letter.body.len();
        if self.copying && self.copied_bytes > self.limits.retain_bytes {
            self.copying = false;
            self.kept.values_mut().for_each(|kept| kept.copy = None);
        }
        let copy = self.copying.then(|| (letter.properties.clone(), letter.body.clone()));
        self.kept.insert(letter.delivery_tag, Kept { delivery_count: letter.delivery_count(), copy });
        letter
    }

    /// Cancels the consumer and keeps whatever it had already delivered (messages that arrived during the scan).
    async fn stop(&mut self) -> Result<(), QueueError> {
        let Some(mut consumer) = self.consumer.take() else { return Ok(()) };
        self.channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .map_err(QueueError::broker(format!("basic.cancel on {}", self.queue)))?;
        // After cancel-ok the stream yields what was already delivered, then ends.
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.map_err(QueueError::broker(format!("consume {}", self.queue)))?;
            self.keep(delivery);
        }
        Ok(())
    }

    /// Removes the message from the queue for good (acks it).
    pub async fn remove(&mut self, delivery_tag: u64) -> Result<(), QueueError> {
        self.channel
            .basic_ack(delivery_tag, BasicAckOptions { multiple: false })
            .await
            .map_err(QueueError::broker(format!("basic.ack on {}", self.queue)))?;
        if let Some(Kept { copy: Some((_, body)), .. }) = self.kept.remove(&delivery_tag) {
            self.copied_bytes -= body.len();
        }
        Ok(())
    }

    /// Messages read so far.
    pub fn read(&self) -> usize {
        self.read
    }

    /// Messages that were ready but beyond [`SCAN_CAP`], so not read by this scan.
    pub fn left_unread(&self) -> usize {
        self.left_unread
    }

    /// Keeps every message read and not removed in the queue, in its place, then closes the channel: one
    /// `nack(multiple, requeue)` gives them back (see the `dead_letters` module docs for why one), or, once one of
    /// them has reached the renewal count, confirmed copies replace them. Call it after every removal: acks sent
    /// earlier are applied first. `connection` carries the renewal copies, on a channel of their own.
    pub async fn release(mut self, connection: &Connection) -> Result<Released, QueueError> {
        self.stop().await?;
        let highest_delivery_count = self.kept.values().map(|kept| kept.delivery_count).max().unwrap_or(0);
        let renewal = match self.kept.keys().next_back().copied() {
            None => Renewal::NotDue,
            Some(last) if highest_delivery_count < self.limits.renew_at => {
                self.give_back(last, self.kept.len()).await?;
                Renewal::NotDue
            }
            Some(last) if !self.copying => {
                self.give_back(last, self.kept.len()).await?;
                Renewal::TooLarge
            }
            Some(last) => self.renew(connection, last).await?,
        };
        // The returns were waited for; acks still on their way change no count (held messages are not ready).
        self.channel
            .close(200, "dead-letter scan done".into())
            .await
            .map_err(QueueError::broker(format!("channel.close after scanning {}", self.queue)))?;
        Ok(Released { kept: self.kept.len(), highest_delivery_count, renewal })
    }

    /// Returns every unacked delivery up to `last` (`count` messages: the kept ones not renewed, since all others
    /// were acked), then waits until the queue shows them. A quorum queue applies returns after the nack and even
    /// the channel's close are answered (3.10.8, measured: 200 returned, 0 to 96 ready right after the close in 8
    /// runs of 10), so a scan starting right after this one would count too few, read only those, and put them
    /// back behind the rest: out of order.
    async fn give_back(&self, last: u64, count: usize) -> Result<(), QueueError> {
        let before = self.ready().await?;
        self.channel
            .basic_nack(last, BasicNackOptions { multiple: true, requeue: true })
            .await
            .map_err(QueueError::broker(format!("basic.nack on {}", self.queue)))?;
        let deadline = tokio::time::Instant::now() + RETURNS_APPLIED;
        loop {
            let ready = self.ready().await?;
            if ready >= before + count {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                // Nothing is lost: the returns are still on their way, or another consumer took some.
                let expected = before + count;
                tracing::warn!(queue = %self.queue, ready, expected, "the dead letters given back are not all ready");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Messages ready in the queue now.
    async fn ready(&self) -> Result<usize, QueueError> {
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declared = self
            .channel
            .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
            .await
            .map_err(QueueError::broker(format!("queue.declare (passive) {}", self.queue)))?;
        Ok(declared.message_count() as usize)
    }

    /// Publishes a copy of each kept message, in order, and acks the originals whose copy was confirmed; the
    /// others are given back. The consumer is cancelled by now, so the copies wait in the queue, behind
    /// anything that arrived during the scan.
    async fn renew(&self, connection: &Connection, last: u64) -> Result<Renewal, QueueError> {
        // An original is acked only once its copy is confirmed: without a copy of every one, return them all.
        let copies: Option<Vec<ToCopy<'_>>> = self
            .kept
            .iter()
            .map(|(tag, kept)| kept.copy.as_ref().map(|(properties, body)| (*tag, properties, body.as_slice())))
            .collect();
        let Some(copies) = copies else {
            self.give_back(last, self.kept.len()).await?;
            return Ok(Renewal::TooLarge);
        };
        let (confirmed, error) = publish_copies(connection, &self.queue, &copies).await;
        let Some(error) = error else {
            self.channel
                .basic_ack(last, BasicAckOptions { multiple: true })
                .await
                .map_err(QueueError::broker(format!("basic.ack on {}", self.queue)))?;
            return Ok(Renewal::Done);
        };
        for tag in &confirmed {
            self.channel
                .basic_ack(*tag, BasicAckOptions { multiple: false })
                .await
                .map_err(QueueError::broker(format!("basic.ack on {}", self.queue)))?;
        }
        // Only a tag still unacked may be named, or the broker closes the channel.
        let acked: BTreeSet<u64> = confirmed.iter().copied().collect();
        let unconfirmed = self.kept.keys().rev().find(|tag| !acked.contains(tag));
        if let Some(highest) = unconfirmed {
            self.give_back(*highest, self.kept.len() - acked.len()).await?;
        }
        Ok(Renewal::Failed { renewed: confirmed.len(), error })
    }
}
