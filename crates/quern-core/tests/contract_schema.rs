//! The JSON Schema shipped for producers in other languages and the Rust types accept and reject the same bodies.

use quern_core::Job;
use serde_json::{json, Value};

fn schema() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schema/job-v1.schema.json");
    let text = std::fs::read_to_string(path).expect("schema file is in the repo");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

/// The contract's examples, shared with the Python and TypeScript producers' tests: what one accepts, all accept.
fn examples(file: &str) -> Vec<(String, Value)> {
    let path = format!("{}/../../schema/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let list: Vec<Value> = serde_json::from_str(&text).expect("examples are JSON");
    assert!(list.len() > 5, "{path} holds the examples");
    list.into_iter()
        .map(|example| (example["name"].as_str().expect("each example has a name").to_owned(), example["body"].clone()))
        .collect()
}

fn accepted() -> Vec<(String, Value)> {
    examples("accepted.json")
}

fn rejected() -> Vec<(String, Value)> {
    examples("rejected.json")
}

#[test]
fn schema_and_types_accept_the_same_bodies() {
    let schema = schema();
    for (name, body) in accepted() {
        assert!(schema.is_valid(&body), "schema rejects {name}: {body}");
        let bytes = serde_json::to_vec(&body).expect("json");
        if let Err(rejected) = Job::decode(&bytes) {
            panic!("types reject {name}: {body}: {}", rejected.error);
        }
    }
}

#[test]
fn schema_and_types_reject_the_same_bodies() {
    let schema = schema();
    for (name, body) in rejected() {
        assert!(!schema.is_valid(&body), "schema accepts {name}: {body}");
        let bytes = serde_json::to_vec(&body).expect("json");
        assert!(Job::decode(&bytes).is_err(), "types accept {name}: {body}");
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
