//! Quern's RabbitMQ adapter (lapin 4).
//!
//! - [`connection`]: connecting with a name the management UI shows, without ever printing the URL's password;
//! - [`tls`]: `amqps://` with the TLS parameters of RabbitMQ's own client in the URL (`cacertfile`, `certfile`,
//!   `keyfile`, `verify`, `server_name_indication`);
//! - [`topology`]: declaring the work exchange, the quorum ingest, delay and dead-letter queues, idempotently,
//!   with arguments that never change (a queue's arguments are fixed once it exists);
//! - [`publish`]: persistent, mandatory publishes whose broker confirm is awaited (nack, return or a missing confirm is an error);
//! - [`headers`]: Quern's own message headers (RabbitMQ 4 ignores client-set `x-` headers);
//! - [`dead_letters`]: reading the dead-letter queue without losing or reordering what stays, and renewing what
//!   a delivery limit would otherwise drop (RabbitMQ 4 limits every quorum queue: docs/brokers.md);
//! - [`depth`]: messages ready and consumers of each queue, a missing queue reported as missing;
//! - [`error`]: [`QueueError`], which knows whether retrying can help.

pub mod connection;
pub mod dead_letters;
pub mod depth;
pub mod error;
pub mod headers;
pub mod publish;
pub mod tls;
pub mod topology;

pub use connection::{connect, redact_url};
pub use error::QueueError;
pub use publish::{enable_confirms, publish, PendingConfirm, DEFAULT_CONFIRM_TIMEOUT};
pub use topology::{
    dead_queue_arguments, declare_celery_queue, declare_copy_queue, declare_retry_queues, declare_topology,
    ingest_queue_arguments, retry_queue_arguments, QueueArguments,
};

/// Re-exported so callers name lapin types through one path.
pub use lapin;
