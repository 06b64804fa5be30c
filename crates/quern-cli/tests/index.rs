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

/// `count` one-chunk documents with random vectors.
async fn insert_random_chunks(db: &TestDatabase, count: i32) {
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO quern_documents (collection, document_id, content_sha256, chunk_count, embedding_model)
             SELECT 'docs', 'doc-' || i, 'sha', 1, 'test-model' FROM generate_series(1, $1::int4) AS i",
            &[&count],
        )
        .await
        .expect("insert documents");
    // `WHERE i > 0` ties the subquery to the row, so each row gets its own vector.
    let chunks = format!(
        "INSERT INTO quern_chunks (collection, document_id, chunk_index, content, content_sha256, embedding)
         SELECT 'docs', 'doc-' || i, 0, 'chunk ' || i, 'sha',
                (SELECT array_agg(random() - 0.5) FROM generate_series(1, {TEST_DIM}) WHERE i > 0)::vector
         FROM generate_series(1, $1::int4) AS i"
    );
    client.execute(&chunks, &[&count]).await.expect("insert chunks");
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

    insert_random_chunks(&db, 500).await;
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
