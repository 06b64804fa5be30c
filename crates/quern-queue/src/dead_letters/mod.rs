//! Writing the failure headers of retries and dead letters, reading the dead-letter queue and re-driving its
//! messages, without losing any or reordering those that stay.
//!
//! - `failure`: the headers a worker writes on a failed attempt ([`retry_headers`], [`dead_letter_headers`]), so
//!   the crate that reads a dead letter is the one that writes it;
//! - `letter`: a [`DeadLetter`] as read, its broker delivery count, and what a replay makes of it
//!   ([`ReplayTarget`], [`DeadLetter::replay_properties`]);
//! - `scan`: the [`DeadLetterScan`]: reading the queue through one consumer, removing what the caller dealt with,
//!   and releasing the rest in its place ([`Released`]);
//! - `renew`: fresh copies of the kept messages before a broker's delivery limit can drop them ([`ScanLimits`],
//!   [`Renewal`]).
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
//! Every return counts as a delivery, and a quorum queue with a delivery limit drops a message (the dead-letter
//! queue has no dead-letter exchange of its own) once given back more often than the limit. RabbitMQ 3.x sets no
//! limit unless asked; 4.0 to 4.2 apply a default of 20 to every quorum queue without `x-delivery-limit`,
//! existing ones included, and count every return (`basic.nack` with requeue too). No queue argument is safe on
//! both (docs/brokers.md), so the scan itself keeps counts low: it reads each message's `x-delivery-count`, and
//! when a message it holds has reached [`RENEW_AT`], [`DeadLetterScan::release`] *renews* the held messages
//! instead of returning them: it publishes a fresh copy of each, in order, into the same queue, and acks the
//! originals once every copy is confirmed. A copy starts with a delivery count of 0; the held messages keep
//! their order (the copies follow anything that arrived during the scan, as returns do). Renewing needs the
//! held messages in memory, so the scan keeps copies of them up to [`RETAIN_BYTES`]; past that it returns them
//! as usual and says so ([`Renewal::TooLarge`]).
//!
//! RabbitMQ 4 with a limit puts returns back at the head, in the order the client returned them, which keeps
//! the order too. A crash can duplicate a renewed message (copy confirmed, original not yet acked), never lose one.

mod failure;
mod letter;
mod renew;
mod scan;

pub use failure::{dead_letter_headers, failed_attempts, retry_headers, FailedAttempt};
pub use letter::{DeadLetter, ReplayTarget, DELIVERY_COUNT};
pub use renew::{Renewal, ScanLimits, RENEW_AT, RETAIN_BYTES};
pub use scan::{DeadLetterScan, Released, SCAN_CAP};
