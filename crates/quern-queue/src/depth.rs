//! How full each queue is: messages ready and consumers attached, read with a passive `queue.declare`.
//!
//! A passive declare never creates a queue; for one that does not exist the broker answers `404 NOT_FOUND`
//! and closes the channel, so the next queue is asked on a fresh channel. While every queue exists, one
//! channel and one round trip per queue is all it costs, cheap enough to poll for metrics.

use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ErrorKind};

use crate::QueueError;

/// One queue's depth at the moment it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The queue's name.
    pub name: String,
    /// Messages ready for delivery (delivered but unacknowledged ones are not counted); `None` if the queue
    /// does not exist.
    pub messages: Option<u32>,
    /// Consumers attached; `None` if the queue does not exist.
    pub consumers: Option<u32>,
}

impl QueueDepth {
    /// False when the queue does not exist.
    pub fn exists(&self) -> bool {
        self.messages.is_some()
    }
}

/// The depth of each queue of `names`, in the same order. A missing queue is reported as such, not as an error;
/// any other failure (a lost connection, a refused channel) is.
pub async fn queue_depths(connection: &Connection, names: &[String]) -> Result<Vec<QueueDepth>, QueueError> {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let mut depths = Vec::with_capacity(names.len());
    let mut open: Option<Channel> = None;
    for name in names {
        let channel = match open.take() {
            Some(channel) => channel,
            None => connection.create_channel().await.map_err(QueueError::broker("channel.open (queue depths)"))?,
        };
        match channel.queue_declare(name.as_str().into(), passive, FieldTable::default()).await {
            Ok(queue) => {
                depths.push(QueueDepth {
                    name: name.clone(),
                    messages: Some(queue.message_count()),
                    consumers: Some(queue.consumer_count()),
                });
                open = Some(channel);
            }
            // The broker has closed this channel: the next queue gets a new one.
            Err(error) if is_not_found(&error) => {
                depths.push(QueueDepth { name: name.clone(), messages: None, consumers: None });
            }
            Err(source) => {
                return Err(QueueError::Broker { operation: format!("queue.declare (passive) {name}"), cause: source })
            }
        }
    }
    if let Some(channel) = open {
        // The depths are read; a failed close (the connection going away) does not make them wrong.
        let _ = channel.close(200, "queue depths read".into()).await;
    }
    Ok(depths)
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(e) if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}
