//! The session's consumers (the ingest queue, and a Celery queue when one is taken over), paused while the embedding provider refuses every request and
//! resumed when it answers again: jobs wait in the queue, where `quern status` shows them, instead of failing.

use anyhow::Context;
use futures::stream::{self, BoxStream, SelectAll};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;

use crate::ops::Health;

/// What each consumer's stream yields: a delivery, or `None` once when that consumer has ended.
type Item = Option<lapin::Result<Delivery>>;

/// The session's consumers, which take no jobs while the embedding provider refuses every request: a
/// `basic.cancel` stops the broker's deliveries (the queue keeps the jobs, visible to `quern status`), the
/// deliveries already received are handed out and given back, and a new `basic.consume` starts once the
/// provider answers again.
pub(crate) struct Intake<'a> {
    channel: &'a lapin::Channel,
    queues: Vec<String>,
    worker_id: &'a str,
    /// The consumers' merged deliveries and their tags; `None` while paused.
    consumer: Option<(SelectAll<BoxStream<'static, Item>>, Vec<String>)>,
    /// Consumers whose stream has ended since the cancel.
    ended: usize,
    /// A cancel was sent: the stream ends once the deliveries already received are handed out.
    cancelling: bool,
}

impl<'a> Intake<'a> {
    /// Consumers of `queues` on `channel`, not started yet.
    pub(crate) fn new(channel: &'a lapin::Channel, queues: Vec<String>, worker_id: &'a str) -> Intake<'a> {
        Intake { channel, queues, worker_id, consumer: None, ended: 0, cancelling: false }
    }

    /// Whether a cancel of ours is under way (so the stream's end is ours, not the broker's).
    pub(crate) fn is_cancelling(&self) -> bool {
        self.cancelling
    }

    /// Our cancel completed: the deliveries already received were handed out.
    pub(crate) fn cancelled(&mut self) {
        self.consumer = None;
        self.cancelling = false;
    }

    /// Starts consuming every queue.
    pub(crate) async fn start(&mut self) -> anyhow::Result<()> {
        let mut streams = SelectAll::new();
        let mut tags = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            let tag = format!("quern-worker-{}-{}", self.worker_id, uuid::Uuid::new_v4().simple());
            let consumer = self
                .channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("starting the consumer of {queue}"))?;
            tracing::info!(%queue, "consuming");
            // Each stream says once that it ended, so the end of one consumer is not lost among the others.
            streams.push(consumer.map(Some).chain(stream::once(async { None })).boxed());
            tags.push(tag);
        }
        self.consumer = Some((streams, tags));
        self.ended = 0;
        Ok(())
    }

    /// Stops the broker's deliveries, if consumers run.
    pub(crate) async fn cancel(&mut self) {
        let Some((_, tags)) = &self.consumer else { return };
        if self.cancelling {
            return;
        }
        self.cancelling = true;
        for tag in tags {
            if let Err(error) = self.channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await {
                tracing::warn!(%error, "cancelling the consumer failed");
            }
        }
    }

    /// Pauses or resumes with the provider's availability.
    pub(crate) async fn follow(&mut self, available: bool, health: &Health) -> anyhow::Result<()> {
        if !available && !self.cancelling && self.consumer.is_some() {
            // The pool logged what the provider answered, once: a second line would only repeat it.
            tracing::debug!("taking no new jobs until the embedding provider answers");
            health.set_consuming(false);
            self.cancel().await;
        } else if available && self.consumer.is_none() {
            self.start().await?;
            health.set_consuming(true);
        }
        Ok(())
    }

    /// The next delivery; never, while paused. `None` when a consumer has ended: after our cancel, once every
    /// consumer has handed out what it had received; else at once (the broker cancelled one).
    pub(crate) async fn next(&mut self) -> Option<lapin::Result<Delivery>> {
        let Some((streams, tags)) = &mut self.consumer else { return std::future::pending().await };
        loop {
            match streams.next().await {
                Some(Some(delivery)) => return Some(delivery),
                Some(None) if self.cancelling => {
                    self.ended += 1;
                    if self.ended == tags.len() {
                        return None;
                    }
                }
                Some(None) | None => return None,
            }
        }
    }
}
