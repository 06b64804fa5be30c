//! Renewal: a fresh copy of each kept dead letter, published in order and confirmed before the original is acked,
//! so that a broker's delivery limit never drops a message the scans keep giving back (see the module docs of
//! `dead_letters` for the limits of RabbitMQ 3.x and 4.x).

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection};

use super::letter::DELIVERY_COUNT;
use crate::publish::{enable_confirms, publish, PendingConfirm, DEFAULT_CONFIRM_TIMEOUT};
use crate::{headers, QueueError};

/// A held message delivered with this `x-delivery-count` or more is renewed rather than returned. Half of
/// RabbitMQ 4's default limit (20): a message is then given back at most 10 times between renewals, which leaves
/// room for crashed scans (each one is a return too) and for scans running side by side.
pub const RENEW_AT: i64 = 10;

/// Bytes of held messages a scan keeps in memory so it can renew them (their bodies are otherwise dropped once
/// the caller has seen them). Past it the scan stops keeping copies and renewal waits for a smaller queue.
pub const RETAIN_BYTES: usize = 256 * 1024 * 1024;

/// Renewal copies awaiting their confirm at once (one confirm round trip per message is slow on a quorum queue).
const RENEW_WINDOW: usize = 64;

/// When a scan renews held messages and how much it may keep in memory to do so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Renew once a held message's delivery count reaches this ([`RENEW_AT`] by default).
    pub renew_at: i64,
    /// Keep at most this many bytes of held messages ([`RETAIN_BYTES`] by default).
    pub retain_bytes: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits { renew_at: RENEW_AT, retain_bytes: RETAIN_BYTES }
    }
}

/// Whether the kept messages were returned (their delivery count goes up by one) or renewed (it restarts).
#[derive(Debug)]
pub enum Renewal {
    /// None had reached the renewal count: all were returned.
    NotDue,
    /// Each was replaced by a confirmed copy, in order.
    Done,
    /// Due, but they were larger than the scan may keep in memory: all were returned.
    TooLarge,
    /// Due, but not every copy was confirmed: `renewed` were replaced, the others returned (nothing is lost).
    Failed {
        /// Messages replaced by their copy.
        renewed: usize,
        /// Why the others were not.
        error: QueueError,
    },
}

/// A kept message to copy: its delivery tag, properties and body.
pub(super) type ToCopy<'a> = (u64, &'a BasicProperties, &'a [u8]);

/// Publishes `copies` to `queue`, in order, through the default exchange (not the dead exchange, whose other
/// bindings would get them too) on a confirm channel of their own, so that a refused publish cannot close the
/// scan's channel. Returns the tags whose copy was confirmed and the first failure (none: all were).
pub(super) async fn publish_copies(
    connection: &Connection,
    queue: &str,
    copies: &[ToCopy<'_>],
) -> (Vec<u64>, Option<QueueError>) {
    let channel = match connection.create_channel().await {
        Ok(channel) => channel,
        Err(source) => {
            return (Vec::new(), Some(QueueError::Broker { operation: "channel.open (renew)".into(), cause: source }))
        }
    };
    if let Err(error) = enable_confirms(&channel).await {
        return (Vec::new(), Some(error));
    }
    let now = now_ms();
    let mut confirmed = Vec::with_capacity(copies.len());
    let mut first_error = None;
    let mut in_flight: VecDeque<(u64, PendingConfirm)> = VecDeque::new();
    for (tag, properties, body) in copies {
        match publish(&channel, "", queue, body, renewal_properties(properties, now)).await {
            Ok(pending) => in_flight.push_back((*tag, pending)),
            Err(error) => {
                first_error = Some(error);
                break;
            }
        }
        while in_flight.len() >= RENEW_WINDOW {
            let Some((tag, pending)) = in_flight.pop_front() else { break };
            match pending.wait(DEFAULT_CONFIRM_TIMEOUT).await {
                Ok(()) => confirmed.push(tag),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if first_error.is_some() {
            break;
        }
    }
    for (tag, pending) in in_flight {
        match pending.wait(DEFAULT_CONFIRM_TIMEOUT).await {
            Ok(()) => confirmed.push(tag),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    // Every confirm is in; a failed close changes nothing about which copies the broker holds.
    let _ = channel.close(200, "dead-letter renewal done".into()).await;
    (confirmed, first_error)
}

/// The properties of a renewal copy: all kept, except the broker's delivery count (a stale one published as a
/// plain header could shadow the new count), with the renewal time added.
fn renewal_properties(properties: &BasicProperties, now_ms: i64) -> BasicProperties {
    let kept: BTreeMap<ShortString, AMQPValue> = properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .filter(|(key, _)| key.as_str() != DELIVERY_COUNT)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut table = FieldTable::from(kept);
    headers::set_i64(&mut table, headers::RENEWED_AT_MS, now_ms);
    properties.clone().with_headers(table)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letters::letter::tests::letter;

    #[test]
    fn a_renewal_copy_drops_only_the_broker_count() {
        let mut table = FieldTable::default();
        headers::set_i64(&mut table, DELIVERY_COUNT, 9);
        headers::set_str(&mut table, headers::REASON, "contract");
        headers::set_str(&mut table, "x-first-death-reason", "delivery_limit");
        let original = letter(table);
        assert_eq!(original.delivery_count(), 9);
        let copy = renewal_properties(&original.properties, 1234);
        let out = copy.headers().as_ref();
        assert!(!out.is_some_and(|t| t.contains_key(DELIVERY_COUNT)), "a stale count would shadow the new one");
        assert_eq!(headers::get_str(out, headers::REASON).as_deref(), Some("contract"));
        assert_eq!(headers::get_str(out, "x-first-death-reason").as_deref(), Some("delivery_limit"));
        assert_eq!(headers::get_i64(out, headers::RENEWED_AT_MS), Some(1234));
        assert_eq!(copy.message_id().as_ref().map(ShortString::as_str), Some("m-1"));
        assert_eq!(letter(FieldTable::default()).delivery_count(), 0, "absent on a first delivery from 3.x");
    }
}
