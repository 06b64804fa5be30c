//! The JSON Schema shipped for producers in other languages and the Rust types accept and reject the same bodies.

use quern_core::Job;
use serde_json::{json, Value};

fn schema() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schema/job-v1.schema.json");
    let text = std::fs::read_to_string(path).expect("schema file is in the repo");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

const ID: &str = "0190a5c2-7a3e-7cc1-9f3b-2d1f0e6b8a11";

fn accepted() -> Vec<Value> {
    vec![
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": "hello"}),
        json!({"job_id": ID.to_uppercase(), "collection": "c", "document_id": "d", "text": ""}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": "x", "op": "upsert"}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "op": "delete"}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "op": "delete", "text": "ignored"}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": "x", "metadata": {"a": [1, 2]}}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": "x", "metadata": null}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": "x", "extra": {"ignored": true}}),
        json!({"job_id": ID, "collection": "é".repeat(128), "document_id": "漢".repeat(512), "text": "x"}),
    ]
}

fn rejected() -> Vec<Value> {
    vec![
        json!([]),
        json!("job"),
        json!(null),
        json!({}),
        json!({"collection": "c", "document_id": "d", "text": "x"}),
        json!({"job_id": ID, "document_id": "d", "text": "x"}),
        json!({"job_id": ID, "collection": "c", "text": "x"}),
        json!({"job_id": ID, "collection": "c", "document_id": "d"}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "op": "upsert"}),
        json!({"job_id": "nope", "collection": "c", "document_id": "d", "text": "x"}),
        json!({"job_id": ID.replace('-', ""), "collection": "c", "document_id": "d", "text": "x"}),
        json!({"job_id": format!("{{{ID}}}"), "collection": "c", "document_id": "d", "text": "x"}),
        json!({"job_id": 7, "collection": "c", "document_id": "d", "text": "x"}),
        json!({"job_id": ID, "collection": "", "document_id": "d", "text": "x"}),
        json!({"job_id": ID, "collection": "é".repeat(129), "document_id": "d", "text": "x"}),
        json!({"job_id": ID, "collection": "c", "document_id": "", "text": "x"}),
        json!({"job_id": ID, "collection": "c", "document_id": "漢".repeat(513), "text": "x"}),
        json!({"job_id": ID, "collection": "c", "document_id": 5, "text": "x"}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": 5}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": null}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": "x", "metadata": [1]}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": "x", "metadata": "m"}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": "x", "op": "merge"}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": "x", "op": null}),
        json!({"job_id": ID, "collection": "c", "document_id": "d", "text": "x", "op": "DELETE"}),
    ]
}

#[test]
fn schema_and_types_accept_the_same_bodies() {
    let schema = schema();
    for body in accepted() {
        assert!(schema.is_valid(&body), "schema rejects {body}");
        let bytes = serde_json::to_vec(&body).expect("json");
        if let Err(rejected) = Job::decode(&bytes) {
            panic!("types reject {body}: {}", rejected.error);
        }
    }
}

#[test]
fn schema_and_types_reject_the_same_bodies() {
    let schema = schema();
    for body in rejected() {
        assert!(!schema.is_valid(&body), "schema accepts {body}");
        let bytes = serde_json::to_vec(&body).expect("json");
        assert!(Job::decode(&bytes).is_err(), "types accept {body}");
    }
}

#[test]
fn jobs_built_in_rust_satisfy_the_schema() {
    let schema = schema();
    let mut metadata = serde_json::Map::new();
    metadata.insert("source".into(), json!("crawler"));
    for job in [Job::upsert("c", "d", "text").with_metadata(metadata), Job::delete("c", "d")] {
        let body: Value = serde_json::from_slice(&job.encode()).expect("json");
        assert!(schema.is_valid(&body), "schema rejects {body}");
    }
}
