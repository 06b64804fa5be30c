//! A dead letter as an operator sees it: its ids, why it died, how long ago, and which document it was about.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};
use quern_queue::dead_letters::DeadLetter;
use quern_queue::headers;
use serde_json::{json, Value};

/// The fields `list`, the filters and the summaries use; the body is read leniently (a malformed body,
/// which is often why the message died, just has no collection or document id).
#[derive(Debug, Clone, Default)]
pub struct LetterView {
    pub message_id: Option<String>,
    pub job_id: Option<String>,
    pub reason: Option<String>,
    pub reason_class: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<i64>,
    pub replay_count: i64,
    pub dead_at_ms: Option<i64>,
    pub age_ms: Option<i64>,
    pub collection: Option<String>,
    pub document_id: Option<String>,
    pub body_bytes: usize,
}

impl LetterView {
    /// Reads `letter`'s headers and, leniently, its body; ages are relative to `now_ms`.
    pub fn new(letter: &DeadLetter, now_ms: i64) -> LetterView {
        let body: Option<Value> = serde_json::from_slice(&letter.body).ok();
        let body_field = |name: &str| body.as_ref()?.get(name)?.as_str().map(str::to_owned);
        let dead_at_ms = letter.dead_at_ms();
        LetterView {
            message_id: letter.message_id().map(str::to_owned),
            job_id: body_field("job_id"),
            reason: letter.header_str(headers::REASON),
            reason_class: letter.header_str(headers::REASON_CLASS),
            error: letter.header_str(headers::ERROR),
            attempts: letter.header_i64(headers::ATTEMPTS),
            replay_count: letter.replay_count(),
            dead_at_ms,
            age_ms: dead_at_ms.map(|at| (now_ms - at).max(0)),
            collection: body_field("collection"),
            document_id: body_field("document_id"),
            body_bytes: letter.body.len(),
        }
    }

    /// The message id, else the body's job id, else `-`.
    pub fn id(&self) -> &str {
        self.message_id.as_deref().or(self.job_id.as_deref()).unwrap_or("-")
    }

    /// The reason header, or `unknown` (used as a key when counting by reason).
    pub fn reason_key(&self) -> &str {
        self.reason.as_deref().unwrap_or("unknown")
    }

    /// How long the message has been dead, if a time header says.
    pub fn age(&self) -> Option<Duration> {
        self.age_ms.map(|ms| Duration::from_millis(ms.unsigned_abs()))
    }

    /// Every field, for `list --json`.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id(),
            "message_id": self.message_id,
            "job_id": self.job_id,
            "reason": self.reason,
            "reason_class": self.reason_class,
            "error": self.error,
            "attempts": self.attempts,
            "replay_count": self.replay_count,
            "dead_at": self.dead_at_ms.and_then(rfc3339),
            "age_secs": self.age_ms.map(|ms| ms / 1000),
            "collection": self.collection,
            "document_id": self.document_id,
            "body_bytes": self.body_bytes,
        })
    }
}

/// Now, in milliseconds since the Unix epoch (the unit of Quern's time headers).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> Option<String> {
    DateTime::from_timestamp_millis(ms).map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// A short age such as `45s`, `12m`, `3h` or `2d`.
pub fn short_age(ms: i64) -> String {
    let secs = ms / 1000;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3_600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// `text` cut to at most `max` characters (an ellipsis marks the cut), on one line.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_truncation_read_well() {
        assert_eq!(short_age(45_000), "45s");
        assert_eq!(short_age(12 * 60_000), "12m");
        assert_eq!(short_age(3 * 3_600_000), "3h");
        assert_eq!(short_age(3 * 86_400_000), "3d");
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a\nlonger text", 6), "a lon…");
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
    }
}
