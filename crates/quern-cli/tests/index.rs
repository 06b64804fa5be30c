//! `quern index status | create` against a real Postgres with pgvector: the segments of a fresh database, chunks
//! landing in the hot segment, `create --seal` sealing and indexing them, a second `create` finding nothing to do,
//! a setting out of range refused with its flag named, `create` standing aside while a worker holds the lease, and
//! a maintainer process killed mid-build, whose build the next one redoes.

use std::process::Output;

use quern_store::segments::MAINTENANCE_LEASE;
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

/// The segment numbered `id` in a status JSON.
fn segment(status: &Value, id: i64) -> &Value {
    status["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .find(|segment| segment["id"] == id)
        .unwrap_or_else(|| panic!("no segment {id} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_segments_and_create_seals_and_indexes_them() {
    let db = TestDatabase::create(TEST_DIM).await;
    let fresh = status_json(&db).await;
    assert_eq!(fresh["segments"].as_array().unwrap().len(), 2, "{fresh}");
    let first = segment(&fresh, 1);
    assert_eq!(first["state"], "indexed", "{fresh}");
    assert_eq!(first["rows"], 0, "{fresh}");
    assert_eq!(first["index"]["valid"], true, "{fresh}");
    assert!(first["indexed_at"].is_string(), "{fresh}");
    let hot = segment(&fresh, 2);
    assert_eq!(hot["state"], "hot", "{fresh}");
    assert_eq!(hot["rows"], 0, "{fresh}");
    assert_eq!(hot["index"], Value::Null, "{fresh}");
    assert_eq!(hot["sealed_at"], Value::Null, "{fresh}");
    assert!(hot["created_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().is_ok(), "{fresh}");
    assert_eq!(fresh["builds"], serde_json::json!([]), "{fresh}");
    assert_eq!(fresh["maintainer_pid"], Value::Null, "{fresh}");
    assert_eq!(fresh["chunk_rows"], 0, "{fresh}");
    // One indexed segment: it keeps the 40 candidates of a k = 10 search alone.
    assert_eq!(fresh["search_ef_search"], serde_json::json!({"k": 10, "ef_search": 40}), "{fresh}");
    assert_eq!(first["search_ef_search"], 40, "{fresh}");
    assert_eq!(hot["search_ef_search"], Value::Null, "{fresh}");

    db.insert_random_chunks(500, TEST_DIM).await;
    let loaded = status_json(&db).await;
    assert_eq!(segment(&loaded, 2)["state"], "hot", "{loaded}");
    assert_eq!(segment(&loaded, 2)["rows"], 500, "{loaded}");
    assert_eq!(segment(&loaded, 1)["rows"], 0, "{loaded}");
    assert_eq!(loaded["chunk_rows"], 500, "{loaded}");
    let text = quern(&db, &["index", "status"]).await;
    assert!(text.status.success(), "{text:?}");
    let text = stdout(&text);
    assert!(text.lines().next().unwrap().starts_with("segment  state"), "{text}");
    assert!(text.lines().any(|line| line.contains("hot") && line.contains("500")), "{text}");
    assert!(text.contains("quern_chunks_segment_1_hnsw"), "{text}");
    assert!(text.contains("no worker holds the maintenance lease"), "{text}");
    assert!(text.contains("chunks: 500"), "{text}");

    let refused = quern(&db, &["index", "create", "--seal", "--m", "40", "--ef-construction", "50"]).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(stderr(&refused).contains("--ef-construction must be at least 2 × --m = 80, got 50"), "{refused:?}");
    assert_eq!(status_json(&db).await, loaded, "nothing changed");
    let refused = quern(&db, &["index", "create", "--m", "1"]).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(stderr(&refused).contains("--m must be between 2 and 100, got 1"), "{refused:?}");

    let created = quern(&db, &["index", "create", "--seal", "--m", "8", "--ef-construction", "32"]).await;
    assert!(created.status.success(), "{created:?}");
    let out = stdout(&created);
    assert!(out.contains("sealed segment 2 (500 rows); segment 3 is hot"), "{out}");
    assert!(out.contains("built the index of segment 2 in "), "{out}");
    assert!(out.trim_end().ends_with("nothing left to do"), "{out}");
    let after = status_json(&db).await;
    let sealed = segment(&after, 2);
    assert_eq!(sealed["state"], "indexed", "{after}");
    assert_eq!(sealed["rows"], 500, "{after}");
    assert_eq!(sealed["index"]["name"], "quern_chunks_segment_2_hnsw", "{after}");
    assert_eq!(sealed["index"]["valid"], true, "{after}");
    assert!(sealed["index"]["size_bytes"].as_u64().unwrap() > 0, "{after}");
    assert!(sealed["sealed_at"].is_string() && sealed["indexed_at"].is_string(), "{after}");
    let definition = sealed["index"]["definition"].as_str().unwrap();
    assert!(definition.contains("WITH (m='8', ef_construction='32')"), "{definition}");
    let hot = segment(&after, 3);
    assert_eq!(hot["state"], "hot", "{after}");
    assert_eq!(hot["rows"], 0, "{after}");
    assert_eq!(after["chunk_rows"], 500, "{after}");
    assert_eq!(after["maintainer_pid"], Value::Null, "create gave the lease up: {after}");

    let second = quern(&db, &["index", "create"]).await;
    assert!(second.status.success(), "{second:?}");
    assert!(stdout(&second).starts_with("nothing left to do"), "{}", stdout(&second));
    assert_eq!(status_json(&db).await["segments"], after["segments"], "left as it was");
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_segments_search_width_growing_with_its_rows() {
    let db = TestDatabase::create(TEST_DIM).await;
    // Two indexed segments of 300 rows (2 and 3), each sealed and indexed by `index create --seal`.
    for first in [1, 301] {
        db.insert_random_chunks_from(first, 300, TEST_DIM).await;
        let created = quern(&db, &["index", "create", "--seal"]).await;
        assert!(created.status.success(), "{created:?}");
    }
    let status = status_json(&db).await;
    let indexed: Vec<&Value> =
        status["segments"].as_array().unwrap().iter().filter(|segment| segment["state"] == "indexed").collect();
    assert!(indexed.len() >= 2, "{status}");
    // 40 candidates shared out among the indexed segments, at least k = 10 each; none for the hot segment,
    // which is scanned exactly.
    let shared = 40_u64.div_ceil(indexed.len() as u64).max(10);
    for segment in &indexed {
        assert_eq!(segment["search_ef_search"], shared, "{status}");
    }
    let hot = status["segments"].as_array().unwrap().iter().find(|segment| segment["state"] == "hot").unwrap();
    assert_eq!(hot["search_ef_search"], Value::Null, "{status}");
    assert_eq!(status["search_ef_search"]["ef_search"], shared, "{status}");

    // The rows a segment was sealed with are what a search reads: 2,000,000 of them widen its own scan to one
    // candidate per 3,000 rows, and leave the other segment's as it was.
    let client = db.client().await;
    client
        .execute("UPDATE quern_segments SET row_count = 2000000 WHERE segment = 2", &[])
        .await
        .expect("pretend segment 2 is large");
    let status = status_json(&db).await;
    assert_eq!(segment(&status, 2)["search_ef_search"], 667, "{status}");
    assert_eq!(segment(&status, 3)["search_ef_search"], shared, "{status}");
    assert_eq!(status["search_ef_search"], serde_json::json!({"k": 10, "ef_search": 667}), "{status}");
    let text = stdout(&quern(&db, &["index", "status"]).await);
    let line = |id: &str| {
        text.lines().find(|line| line.trim_start().starts_with(id)).unwrap_or_else(|| panic!("{id}: {text}"))
    };
    assert!(line("2 ").ends_with("), 667 candidates"), "{text}");
    assert!(line("3 ").ends_with(&format!("), {shared} candidates")), "{text}");
    assert!(
        text.contains(
            "quern search -k 10 keeps the candidates shown in each indexed segment (hnsw.ef_search, up to 667;"
        ),
        "{text}"
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_stands_aside_while_a_worker_holds_the_lease() {
    let db = TestDatabase::create(TEST_DIM).await;
    db.insert_random_chunks(50, TEST_DIM).await;
    let holder = db.client().await;
    holder.execute("SELECT pg_advisory_lock($1)", &[&MAINTENANCE_LEASE]).await.expect("take the lease");
    let pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.expect("backend pid").get(0);

    let created = quern(&db, &["index", "create", "--seal"]).await;
    assert!(created.status.success(), "{created:?}");
    assert_eq!(
        stdout(&created).trim_end(),
        format!("a worker holds the maintenance lease (backend pid {pid}): it seals, builds and merges by itself")
    );
    let status = status_json(&db).await;
    assert_eq!(status["maintainer_pid"], pid, "{status}");
    assert_eq!(segment(&status, 2)["state"], "hot", "nothing sealed: {status}");
    assert_eq!(segment(&status, 2)["rows"], 50, "{status}");
    let text = stdout(&quern(&db, &["index", "status"]).await);
    assert!(text.contains(&format!("maintenance lease: held by backend pid {pid}")), "{text}");

    drop(holder);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintainer_process_killed_mid_build_frees_the_lease_and_its_build_is_redone() {
    let db = TestDatabase::create(TEST_DIM).await;
    db.insert_random_chunks(500, TEST_DIM).await;
    // A writer's open transaction on the hot segment holds the concurrent build of its index in its first phase.
    let writer = db.client().await;
    writer.batch_execute("BEGIN; LOCK TABLE quern_chunks_segment_2 IN ROW EXCLUSIVE MODE").await.unwrap();
    let mut maintainer = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(["index", "create", "--seal"])
        .env("QUERN_DATABASE_URL", &db.url)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start quern index create");
    let observer = db.client().await;
    let building = quern_testkit::wait_until(std::time::Duration::from_secs(20), || async {
        let running = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_progress_create_index
                 WHERE relid = to_regclass('quern_chunks_segment_2')",
                &[],
            )
            .await;
        running.is_ok_and(|row| row.get::<_, i64>(0) == 1)
    })
    .await;
    assert!(building, "the build never started");

    maintainer.kill().await.expect("SIGKILL the maintainer");
    // Postgres checks the client of a running statement every second (client_connection_check_interval): the
    // session ends while its build still waits, which frees the lease. Only then may the writer finish.
    let freed = quern_testkit::wait_until(std::time::Duration::from_secs(20), || async {
        status_json(&db).await["maintainer_pid"].is_null()
    })
    .await;
    assert!(freed, "the killed maintainer's session still holds the lease");
    writer.batch_execute("COMMIT").await.unwrap();

    let next = quern(&db, &["index", "create"]).await;
    assert!(next.status.success(), "{next:?}");
    assert!(
        stdout(&next).contains("built the index of segment 2") && stdout(&next).contains("replacing an invalid one"),
        "{}",
        stdout(&next)
    );
    let status = status_json(&db).await;
    assert_eq!(segment(&status, 2)["state"], "indexed", "{status}");
    assert_eq!(segment(&status, 2)["index"]["valid"], true, "{status}");
    assert_eq!(segment(&status, 2)["rows"], 500, "{status}");
    db.drop_database().await;
}
