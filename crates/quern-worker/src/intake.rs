//! The session's consumer of the ingest queue, paused while the embedding provider refuses every request and
//! resumed when it answers again: jobs wait in the queue, where `quern status` shows them, instead of failing.

use anyhow::Context;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;

use crate::ops::Health;

/// The session's consumer, which takes no jobs while the embedding provider refuses every request: a
/// `basic.cancel` stops the broker's deliveries (the queue keeps the jobs, visible to `quern status`), the
/// deliveries already received are handed out and given back, and a new `basic.consume` starts once the
/// provider answers again.
pub(crate) struct Intake<'a> {
    channel: &'a lapin::Channel,
    queue: String,
    worker_id: &'a str,
    /// The consumer and its tag; `None` while paused.
    consumer: Option<(lapin::Consumer, String)>,
    /// A cancel was sent: the stream ends once the deliveries already received are handed out.
    cancelling: bool,
}

impl<'a> Intake<'a> {
    /// A consumer of `queue` on `channel`, not started yet.
    pub(crate) fn new(channel: &'a lapin::Channel, queue: String, worker_id: &'a str) -> Intake<'a> {
        Intake { channel, queue, worker_id, consumer: None, cancelling: false }
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

    /// Starts consuming.
    pub(crate) async fn start(&mut self) -> anyhow::Result<()> {
        let tag = format!("quern-worker-{}-{}", self.worker_id, uuid::Uuid::new_v4().simple());
        let consumer = self
            .channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("starting the consumer")?;
        tracing::info!(queue = %self.queue, "consuming");
        self.consumer = Some((consumer, tag));
        Ok(())
    }

    /// Stops the broker's deliveries, if a consumer runs.
    pub(crate) async fn cancel(&mut self) {
        let Some((_, tag)) = &self.consumer else { return };
        if self.cancelling {
            return;
        }
        self.cancelling = true;
        if let Err(error) = self.channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await {
            tracing::warn!(%error, "cancelling the consumer failed");
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

    /// The next delivery; never, while paused.
    pub(crate) async fn next(&mut self) -> Option<lapin::Result<Delivery>> {
        match &mut self.consumer {
            Some((consumer, _)) => consumer.next().await,
            None => std::future::pending().await,
        }
    }
}
