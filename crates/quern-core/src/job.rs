//! The job contract v1: the JSON body any web tier may publish, decoded with reasons a person can act on.
//!
//! The JSON Schema in `schema/job-v1.schema.json` describes the same contract; a test feeds both the same examples.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Version of the contract this crate speaks; producers put it in the `quern-contract` header.
pub const CONTRACT_VERSION: u32 = 1;
/// Inclusive bounds on `collection`, in Unicode scalar values (what JSON Schema's `maxLength` counts).
pub const COLLECTION_MAX_CHARS: usize = 128;
/// Inclusive bound on `document_id`, in Unicode scalar values.
pub const DOCUMENT_ID_MAX_CHARS: usize = 512;

/// What a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOp {
    /// Insert the document, or replace every chunk of an existing one atomically.
    #[default]
    Upsert,
    /// Remove the document and all of its chunks.
    Delete,
}

impl JobOp {
    /// The name used in the contract and in `quern_jobs`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOp::Upsert => "upsert",
            JobOp::Delete => "delete",
        }
    }
}

/// One ingestion job, valid by construction when it comes from [`Job::decode`] or passes [`Job::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "JobWire")]
pub struct Job {
    /// Unique id chosen by the producer; the worker records the job's fate under it in `quern_jobs`.
    pub job_id: Uuid,
    /// Namespace of documents (1..=128 chars).
    pub collection: String,
    /// The document's id inside its collection (1..=512 chars).
    pub document_id: String,
    /// The document's text; empty for deletes.
    #[serde(default)]
    pub text: String,
    /// Free-form JSON object stored beside the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Upsert (default) or delete.
    #[serde(default)]
    pub op: JobOp,
}

/// The body as it arrives, before the rules that span fields (text required for upserts) are applied.
#[derive(Deserialize)]
struct JobWire {
    #[serde(deserialize_with = "hyphenated_uuid")]
    job_id: Uuid,
    collection: String,
    document_id: String,
    // `Option` only to tell "absent" from "empty"; an explicit `null` is rejected like any non-string.
    #[serde(default, deserialize_with = "present_string")]
    text: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    op: JobOp,
}

impl TryFrom<JobWire> for Job {
    type Error = ContractError;

    fn try_from(wire: JobWire) -> Result<Self, Self::Error> {
        let text = match (wire.op, wire.text) {
            (_, Some(text)) => text,
            (JobOp::Delete, None) => String::new(),
            (JobOp::Upsert, None) => {
                return Err(ContractError::field("text", "missing field `text` (required when op is upsert)"))
            }
        };
        let job = Job {
            job_id: wire.job_id,
            collection: wire.collection,
            document_id: wire.document_id,
            text,
            metadata: wire.metadata,
            op: wire.op,
        };
        job.validate()?;
        Ok(job)
    }
}

fn hyphenated_uuid<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
    let raw = String::deserialize(deserializer)?;
    parse_hyphenated_uuid(&raw)
        .ok_or_else(|| serde::de::Error::custom(format!("`{raw}` is not a hyphenated UUID (8-4-4-4-12 hex digits)")))
}

fn present_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

/// Accepts only the 36-character hyphenated form, as the JSON Schema's pattern does
/// (the `uuid` crate alone would also take braces, `urn:` and bare hex).
fn parse_hyphenated_uuid(raw: &str) -> Option<Uuid> {
    if raw.len() != 36 {
        return None;
    }
    Uuid::try_parse(raw).ok()
}

/// Why a body is not a valid v1 job. The message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The body is not UTF-8 text.
    #[error("body is not valid UTF-8 (first bad byte at offset {valid_up_to})")]
    NotUtf8 {
        /// Bytes before the first invalid sequence.
        valid_up_to: usize,
    },
    /// The body is not a JSON object of the right shape.
    #[error("{0}")]
    Malformed(String),
    /// One field breaks a rule of the contract.
    #[error("field `{field}`: {reason}")]
    Field {
        /// The field at fault, as named in the contract.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ContractError {
    fn field(field: &'static str, reason: impl Into<String>) -> Self {
        ContractError::Field { field, reason: reason.into() }
    }
}

/// A body that was refused, with the job id when one could be read from it (so its fate can still be recorded).
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedBody {
    /// The `job_id` field, when the body was JSON with a well-formed one.
    pub job_id: Option<Uuid>,
    /// Why the body was refused.
    pub error: ContractError,
}

impl Job {
    /// A new upsert job with a fresh, time-ordered job id.
    pub fn upsert(collection: impl Into<String>, document_id: impl Into<String>, text: impl Into<String>) -> Job {
        Job {
            job_id: Uuid::now_v7(),
            collection: collection.into(),
            document_id: document_id.into(),
            text: text.into(),
            metadata: None,
            op: JobOp::Upsert,
        }
    }

    /// A new delete job with a fresh, time-ordered job id.
    pub fn delete(collection: impl Into<String>, document_id: impl Into<String>) -> Job {
        Job { op: JobOp::Delete, ..Job::upsert(collection, document_id, "") }
    }

    /// Attaches a metadata object.
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Job {
        self.metadata = Some(metadata);
        self
    }

    /// Decodes and validates a message body.
    pub fn decode(body: &[u8]) -> Result<Job, RejectedBody> {
        Self::decode_inner(body).map_err(|error| RejectedBody { job_id: peek_job_id(body), error })
    }

    fn decode_inner(body: &[u8]) -> Result<Job, ContractError> {
        let text = std::str::from_utf8(body).map_err(|e| ContractError::NotUtf8 { valid_up_to: e.valid_up_to() })?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let job: Job = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| describe_json_error(&e))?;
        deserializer
            .end()
            .map_err(|e| ContractError::Malformed(format!("trailing characters after the job object: {e}")))?;
        Ok(job)
    }

    /// Decodes and validates a job already parsed as JSON (a job built from another message format, such as a
    /// Celery task's arguments), with the same rules and reasons as [`Job::decode`].
    pub fn from_json(value: Value) -> Result<Job, ContractError> {
        serde_path_to_error::deserialize(value).map_err(|e| describe_json_error(&e))
    }

    /// Checks the rules of the contract that the Rust types alone do not enforce.
    pub fn validate(&self) -> Result<(), ContractError> {
        check_length("collection", &self.collection, COLLECTION_MAX_CHARS)?;
        check_length("document_id", &self.document_id, DOCUMENT_ID_MAX_CHARS)?;
        Ok(())
    }

    /// When the job was created, if its id says so (a UUIDv7, as the producer library and CLI make), in
    /// milliseconds since the Unix epoch. Orders jobs for the same document: the later one wins.
    pub fn created_at_ms(&self) -> Option<u64> {
        let timestamp = self.job_id.get_timestamp()?;
        let (secs, nanos) = timestamp.to_unix();
        Some(secs * 1000 + u64::from(nanos) / 1_000_000)
    }

    /// The JSON body to publish.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings, a UUID and a JSON map cannot fail.
        serde_json::to_vec(self).expect("a Job always serialises")
    }
}

fn check_length(field: &'static str, value: &str, max: usize) -> Result<(), ContractError> {
    let chars = value.chars().count();
    if chars == 0 {
        return Err(ContractError::field(field, "must not be empty"));
    }
    if chars > max {
        return Err(ContractError::field(field, format!("is {chars} characters long, the limit is {max}")));
    }
    Ok(())
}

fn describe_json_error(error: &serde_path_to_error::Error<serde_json::Error>) -> ContractError {
    use serde_json::error::Category;
    let path = error.path().to_string();
    let inner = error.inner();
    match inner.classify() {
        // Not JSON at all (or cut short): say so, or serde's "expected ident at line 1 column 2" reads like a riddle.
        Category::Syntax | Category::Eof | Category::Io => {
            ContractError::Malformed(format!("the message body is not JSON: {inner}"))
        }
        // JSON, but not an object: serde would name its internal type ("expected struct JobWire").
        Category::Data if (path == "." || path.is_empty()) && inner.to_string().starts_with("invalid type:") => {
            let found = inner.to_string();
            let found = found.trim_start_matches("invalid type: ").split(", expected").next().unwrap_or_default();
            ContractError::Malformed(format!("the message body is JSON but not a job object: it is {found}"))
        }
        // `try_from` errors arrive as custom messages already naming their field.
        Category::Data if path == "." || path.is_empty() => ContractError::Malformed(inner.to_string()),
        Category::Data => ContractError::Malformed(format!("field `{path}`: {inner}")),
    }
}

/// Reads `job_id` from a body that failed validation, so the failure can be recorded against it.
fn peek_job_id(body: &[u8]) -> Option<Uuid> {
    let value: Value = serde_json::from_slice(body).ok()?;
    parse_hyphenated_uuid(value.get("job_id")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0190a5c2-7a3e-7cc1-9f3b-2d1f0e6b8a11";

    fn decode_err(body: &str) -> String {
        Job::decode(body.as_bytes()).expect_err("must be rejected").error.to_string()
    }

    #[test]
    fn minimal_upsert_decodes_with_defaults() {
        let job =
            Job::decode(format!(r#"{{"job_id":"{ID}","collection":"c","document_id":"d","text":"hi"}}"#).as_bytes())
                .expect("valid");
        assert_eq!(job.op, JobOp::Upsert);
        assert_eq!(job.text, "hi");
        assert_eq!(job.metadata, None);
    }

    #[test]
    fn delete_needs_no_text_and_unknown_fields_are_ignored() {
        let job = Job::decode(
            format!(r#"{{"job_id":"{ID}","collection":"c","document_id":"d","op":"delete","future":1}}"#).as_bytes(),
        )
        .expect("valid");
        assert_eq!(job.op, JobOp::Delete);
    }

    #[test]
    fn reasons_name_the_field() {
        assert!(decode_err(&format!(r#"{{"job_id":"{ID}","collection":"c","document_id":"d"}}"#)).contains("`text`"));
        assert!(decode_err(&format!(r#"{{"job_id":"{ID}","collection":5,"document_id":"d","text":""}}"#))
            .contains("`collection`"));
        assert!(decode_err(&format!(r#"{{"job_id":"{ID}","collection":"","document_id":"d","text":""}}"#))
            .contains("`collection`"));
        assert!(
            decode_err(r#"{"job_id":"not-a-uuid","collection":"c","document_id":"d","text":""}"#).contains("`job_id`")
        );
        assert!(decode_err(&format!(r#"{{"job_id":"{ID}","collection":"c","text":""}}"#)).contains("`document_id`"));
        assert!(decode_err(&format!(
            r#"{{"job_id":"{ID}","collection":"c","document_id":"d","text":"","op":"merge"}}"#
        ))
        .contains("`op`"));
        assert!(decode_err(&format!(r#"{{"job_id":"{ID}","collection":"c","document_id":"d","text":null}}"#))
            .contains("`text`"));
        let long = "x".repeat(DOCUMENT_ID_MAX_CHARS + 1);
        assert!(decode_err(&format!(r#"{{"job_id":"{ID}","collection":"c","document_id":"{long}","text":""}}"#))
            .contains("`document_id`"));
    }

    #[test]
    fn a_body_that_is_not_json_says_so() {
        assert_eq!(decode_err("not json at all"), "the message body is not JSON: expected ident at line 1 column 2");
        assert_eq!(decode_err("{not json"), "the message body is not JSON: key must be a string at line 1 column 2");
        assert!(decode_err("").starts_with("the message body is not JSON: EOF while parsing"), "{}", decode_err(""));
        assert!(
            decode_err(&format!(r#"{{"job_id":"{ID}","collection":"c""#)).starts_with("the message body is not JSON")
        );
        assert_eq!(decode_err("42"), "the message body is JSON but not a job object: it is integer `42`");
        assert_eq!(decode_err("null"), "the message body is JSON but not a job object: it is null");
        // Valid JSON that breaks the contract still names the field, not JSON.
        let wrong_type = decode_err(&format!(r#"{{"job_id":"{ID}","collection":5,"document_id":"d","text":""}}"#));
        assert!(wrong_type.starts_with("field `collection`: invalid type"), "{wrong_type}");
        assert!(!decode_err(&format!(r#"{{"job_id":"{ID}","document_id":"d"}}"#)).contains("not JSON"));
    }

    #[test]
    fn non_utf8_is_rejected_with_offset() {
        let rejected = Job::decode(b"{\"job_id\": \"\xff\"}").expect_err("not utf-8");
        assert_eq!(rejected.error, ContractError::NotUtf8 { valid_up_to: 12 });
    }

    #[test]
    fn job_id_is_recovered_from_an_invalid_body() {
        let rejected = Job::decode(format!(r#"{{"job_id":"{ID}","collection":""}}"#).as_bytes()).expect_err("invalid");
        assert_eq!(rejected.job_id, Some(Uuid::parse_str(ID).expect("uuid")));
    }

    #[test]
    fn encode_round_trips() {
        let mut metadata = Map::new();
        metadata.insert("lang".into(), Value::from("en"));
        let job = Job::upsert("c", "d/é.txt", "text").with_metadata(metadata);
        assert_eq!(Job::decode(&job.encode()).expect("round trip"), job);
        let delete = Job::delete("c", "d");
        assert_eq!(Job::decode(&delete.encode()).expect("round trip"), delete);
    }

    #[test]
    fn v7_job_ids_carry_their_creation_time() {
        let before =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
        let job = Job::upsert("c", "d", "");
        let at = job.created_at_ms().expect("v7 ids carry a time");
        assert!(at >= before && at < before + 5_000);
        let v4 = Job { job_id: Uuid::new_v4(), ..job };
        assert_eq!(v4.created_at_ms(), None);
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let job = Job::upsert("é".repeat(COLLECTION_MAX_CHARS), "d", "");
        assert!(job.validate().is_ok());
        let job = Job::upsert("é".repeat(COLLECTION_MAX_CHARS + 1), "d", "");
        assert!(job.validate().is_err());
    }
}
