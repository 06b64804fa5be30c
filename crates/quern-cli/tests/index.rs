//! `quern index drop | status | create` against a real Postgres with pgvector: the bulk-load workflow an operator
//! follows, a second create doing nothing, and a setting out of range refused with its flag named.

use std::process::Output;

use quern_testkit::{TestDatabase, TEST_DIM};
use serde_json::Value;

/// Runs `quern` against `db`, as an operator's shell would with QUERN_DATABASE_URL set.
async fn quern(db: &TestDatabase, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(args)
        .env("QUERN_DATABASE_URL", &db.url)
        .output()
        .await
        .expect("run quern")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn status_json(db: &TestDatabase) -> Value {
    let output = quern(db, &["index", "status", "--json"]).await;
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&output)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_backfill_and_create_the_vector_index() {
    let db = TestDatabase::create(TEST_DIM).await;
    let before = status_json(&db).await;
    assert_eq!(before["index"]["valid"], true, "{before}");
    assert!(before["index"]["size_bytes"].as_u64().unwrap() > 0, "{before}");

    let dropped = quern(&db, &["index", "drop"]).await;
    assert!(dropped.status.success(), "{dropped:?}");
    assert!(stdout(&dropped).contains("dropped the vector index"), "{}", stdout(&dropped));
    let again = quern(&db, &["index", "drop"]).await;
    assert!(again.status.success(), "{again:?}");
    assert!(stdout(&again).contains("no vector index to drop"), "{}", stdout(&again));

    db.insert_random_chunks(500, TEST_DIM).await;
    let during = status_json(&db).await;
    assert_eq!(during, serde_json::json!({"index": null, "running_build": null, "chunk_rows": 500}));
    let text = quern(&db, &["index", "status"]).await;
    assert!(stdout(&text).contains("no vector index"), "{}", stdout(&text));

    let refused = quern(&db, &["index", "create", "--m", "40", "--ef-construction", "50"]).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(stderr(&refused).contains("--ef-construction must be at least 2 × --m = 80, got 50"), "{refused:?}");
    assert_eq!(status_json(&db).await["index"], Value::Null, "nothing was built");

    let created = quern(&db, &["index", "create", "--m", "8", "--ef-construction", "32"]).await;
    assert!(created.status.success(), "{created:?}");
    assert!(
        stdout(&created).contains("built quern_chunks_embedding_hnsw (m = 8, ef_construction = 32) over 500 chunks"),
        "{}",
        stdout(&created)
    );
    let after = status_json(&db).await;
    assert_eq!(after["index"]["valid"], true, "{after}");
    let definition = after["index"]["definition"].as_str().unwrap();
    assert!(definition.contains("WITH (m='8', ef_construction='32')"), "{definition}");

    let second = quern(&db, &["index", "create"]).await;
    assert!(second.status.success(), "{second:?}");
    assert!(stdout(&second).contains("already exists and is valid"), "{}", stdout(&second));
    assert_eq!(status_json(&db).await["index"]["definition"], definition, "left as it was");
    db.drop_database().await;
}
