//! Quern's own message headers. RabbitMQ 4 drops client-set `x-` headers, so none of ours start with `x-`.

use lapin::types::{AMQPValue, FieldTable, LongString};

/// Contract version of the body (producers set it; absent means 1).
pub const CONTRACT: &str = "quern-contract";
/// Attempts made so far on a job.
pub const ATTEMPTS: &str = "quern-attempts";
/// `transient` or `permanent`, on a dead letter.
pub const REASON_CLASS: &str = "quern-reason-class";
/// Short machine-readable cause on a dead letter (e.g. `contract`, `embedding_rejected`).
pub const REASON: &str = "quern-reason";
/// The full error message on a dead letter.
pub const ERROR: &str = "quern-error";
/// Which worker dead-lettered the message.
pub const WORKER_ID: &str = "quern-worker-id";
/// Exchange the message was first published to.
pub const ORIGINAL_EXCHANGE: &str = "quern-original-exchange";
/// Routing key the message was first published with.
pub const ORIGINAL_ROUTING_KEY: &str = "quern-original-routing-key";
/// When the first failure happened, in milliseconds since the Unix epoch.
pub const FIRST_FAILURE_AT_MS: &str = "quern-first-failure-at-ms";
/// When the last failure happened, in milliseconds since the Unix epoch.
pub const LAST_FAILURE_AT_MS: &str = "quern-last-failure-at-ms";

/// How many times `quern dlq replay` has sent this message back to work.
pub const REPLAY_COUNT: &str = "quern-replay-count";
/// When the message was last replayed, in milliseconds since the Unix epoch.
pub const REPLAYED_AT_MS: &str = "quern-replayed-at-ms";
/// When the message entered the dead-letter queue, in milliseconds since the Unix epoch.
pub const DEAD_AT_MS: &str = "quern-dead-at-ms";
/// When `quern dlq` last replaced the message in the dead-letter queue by a fresh copy (so the broker's
/// delivery count starts again), in milliseconds since the Unix epoch; see `dead_letters`.
pub const RENEWED_AT_MS: &str = "quern-renewed-at-ms";

/// Headers that describe one trip through the dead-letter queue; a replay removes them (and resets
/// [`ATTEMPTS`]) so the replayed job starts afresh, keeping only [`REPLAY_COUNT`].
pub const DEAD_LETTER_HEADERS: &[&str] = &[
    ATTEMPTS,
    REASON_CLASS,
    REASON,
    ERROR,
    WORKER_ID,
    FIRST_FAILURE_AT_MS,
    LAST_FAILURE_AT_MS,
    DEAD_AT_MS,
    RENEWED_AT_MS,
];

/// Sets a string header.
pub fn set_str(table: &mut FieldTable, key: &str, value: &str) {
    table.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
}

/// Sets an integer header.
pub fn set_i64(table: &mut FieldTable, key: &str, value: i64) {
    table.insert(key.into(), AMQPValue::LongLongInt(value));
}

/// Reads a string header, whatever string type the publisher used.
pub fn get_str(table: Option<&FieldTable>, key: &str) -> Option<String> {
    match table?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Reads an integer header, whatever integer width the publisher used.
pub fn get_i64(table: Option<&FieldTable>, key: &str) -> Option<i64> {
    match table?.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}
