//! A message read from the dead-letter queue: its headers, the broker's delivery count, and what a replay makes
//! of it (where it goes, with which properties).

use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use quern_core::Topology;

use crate::headers;

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

    /// How many times this queue has given the message out and had it back: RabbitMQ's `x-delivery-count`
    /// (0 when absent, as on a first delivery from RabbitMQ 3.x). It is what a delivery limit is compared with.
    pub fn delivery_count(&self) -> i64 {
        self.header_i64(DELIVERY_COUNT).unwrap_or(0)
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A dead letter with these headers (the renewal tests use it too).
    pub(in crate::dead_letters) fn letter(headers: FieldTable) -> DeadLetter {
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
