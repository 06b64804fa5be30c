//! The headers a worker writes when a job fails: the same record on a retry (the message parks in a delay queue)
//! and on a dead letter (plus why it died and when). They are written here, beside the code that reads them back
//! ([`DeadLetter`](super::DeadLetter), `quern dlq`), so the wire format lives in one crate.

use lapin::types::FieldTable;
use quern_core::Failure;

use crate::headers;

/// One failed attempt, as recorded on the message.
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    /// Why it failed.
    pub failure: &'a Failure,
    /// Failed attempts so far, this one included.
    pub failed_attempts: u32,
    /// Which worker saw it fail.
    pub worker_id: &'a str,
    /// Exchange a replay sends the message to, unless the message already names one (the first failure's wins).
    pub exchange: &'a str,
    /// Routing key a replay uses, unless the message already names one.
    pub routing_key: &'a str,
    /// When it failed, in milliseconds since the Unix epoch.
    pub now_ms: i64,
}

/// Failed attempts recorded in `headers` so far (0 for a fresh job).
pub fn failed_attempts(headers: Option<&FieldTable>) -> u32 {
    headers::get_i64(headers, headers::ATTEMPTS).and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// The message's headers (`original`) with the failure recorded: for a retry. Every other header is kept; the
/// first failure's time, exchange and routing key are kept once set.
pub fn retry_headers(original: Option<&FieldTable>, attempt: &FailedAttempt<'_>) -> FieldTable {
    let mut table = original.cloned().unwrap_or_default();
    let first_failure = headers::get_i64(original, headers::FIRST_FAILURE_AT_MS).unwrap_or(attempt.now_ms);
    let exchange = headers::get_str(original, headers::ORIGINAL_EXCHANGE);
    let routing_key = headers::get_str(original, headers::ORIGINAL_ROUTING_KEY);
    headers::set_i64(&mut table, headers::ATTEMPTS, i64::from(attempt.failed_attempts));
    headers::set_str(&mut table, headers::ERROR, &attempt.failure.detail);
    headers::set_i64(&mut table, headers::FIRST_FAILURE_AT_MS, first_failure);
    headers::set_i64(&mut table, headers::LAST_FAILURE_AT_MS, attempt.now_ms);
    headers::set_str(&mut table, headers::WORKER_ID, attempt.worker_id);
    headers::set_str(&mut table, headers::ORIGINAL_EXCHANGE, exchange.as_deref().unwrap_or(attempt.exchange));
    headers::set_str(&mut table, headers::ORIGINAL_ROUTING_KEY, routing_key.as_deref().unwrap_or(attempt.routing_key));
    table
}

/// The message's headers with the failure recorded as for a retry, plus the reason's class, the reason and the
/// time of death: for a dead letter.
pub fn dead_letter_headers(original: Option<&FieldTable>, attempt: &FailedAttempt<'_>) -> FieldTable {
    let mut table = retry_headers(original, attempt);
    headers::set_str(&mut table, headers::REASON_CLASS, attempt.failure.class.as_str());
    headers::set_str(&mut table, headers::REASON, &attempt.failure.reason);
    headers::set_i64(&mut table, headers::DEAD_AT_MS, attempt.now_ms);
    table
}

#[cfg(test)]
mod tests {
    use quern_core::ErrorClass;

    use super::*;

    fn attempt(failure: &Failure) -> FailedAttempt<'_> {
        FailedAttempt {
            failure,
            failed_attempts: 3,
            worker_id: "w-1",
            exchange: "work",
            routing_key: "ingest",
            now_ms: 2_000,
        }
    }

    #[test]
    fn a_first_failure_records_the_attempt_and_where_it_came_from() {
        let failure = Failure { class: ErrorClass::Transient, reason: "db".into(), detail: "down".into() };
        let mut original = FieldTable::default();
        headers::set_i64(&mut original, headers::CONTRACT, 1);
        let out = retry_headers(Some(&original), &attempt(&failure));
        let out = Some(&out);
        assert_eq!(failed_attempts(out), 3);
        assert_eq!(headers::get_str(out, headers::ERROR).as_deref(), Some("down"));
        assert_eq!(headers::get_i64(out, headers::FIRST_FAILURE_AT_MS), Some(2_000));
        assert_eq!(headers::get_i64(out, headers::LAST_FAILURE_AT_MS), Some(2_000));
        assert_eq!(headers::get_str(out, headers::WORKER_ID).as_deref(), Some("w-1"));
        assert_eq!(headers::get_str(out, headers::ORIGINAL_EXCHANGE).as_deref(), Some("work"));
        assert_eq!(headers::get_str(out, headers::ORIGINAL_ROUTING_KEY).as_deref(), Some("ingest"));
        assert_eq!(headers::get_i64(out, headers::CONTRACT), Some(1), "other headers kept");
        assert!(headers::get_str(out, headers::REASON).is_none(), "a retry is not a dead letter");
    }

    #[test]
    fn a_later_failure_keeps_the_first_ones_time_and_origin() {
        let failure = Failure { class: ErrorClass::Permanent, reason: "contract".into(), detail: "bad".into() };
        let mut original = FieldTable::default();
        headers::set_i64(&mut original, headers::FIRST_FAILURE_AT_MS, 1_000);
        headers::set_str(&mut original, headers::ORIGINAL_EXCHANGE, "first");
        headers::set_str(&mut original, headers::ORIGINAL_ROUTING_KEY, "rk");
        let out = dead_letter_headers(Some(&original), &attempt(&failure));
        let out = Some(&out);
        assert_eq!(headers::get_i64(out, headers::FIRST_FAILURE_AT_MS), Some(1_000));
        assert_eq!(headers::get_str(out, headers::ORIGINAL_EXCHANGE).as_deref(), Some("first"));
        assert_eq!(headers::get_str(out, headers::ORIGINAL_ROUTING_KEY).as_deref(), Some("rk"));
        assert_eq!(headers::get_str(out, headers::REASON_CLASS).as_deref(), Some("permanent"));
        assert_eq!(headers::get_str(out, headers::REASON).as_deref(), Some("contract"));
        assert_eq!(headers::get_i64(out, headers::DEAD_AT_MS), Some(2_000));
        assert_eq!(failed_attempts(None), 0);
    }
}
