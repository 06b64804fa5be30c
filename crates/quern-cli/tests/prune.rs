//! `quern prune` against a real Postgres: a dry run counts without deleting, a run deletes what retention lets go
//! and is recorded, `quern status` shows it, and the tombstone retention's default follows the retry flags.

use std::process::Output;

use quern_testkit::{TestDatabase, TestQueues, TEST_DIM};
use serde_json::Value;

/// Runs `quern` against `db` (and the test broker, under `queues`' prefix), with no retention setting inherited.
async fn quern(db: &TestDatabase, queues: &TestQueues, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"));
    command
        .args(args)
        .env("QUERN_AMQP_URL", quern_testkit::amqp_url())
        .env("QUERN_QUEUE_PREFIX", queues.topology.prefix())
        .env("QUERN_DATABASE_URL", &db.url);
    for inherited in [
        "QUERN_CONFIG",
        "QUERN_RETRY_TIERS",
        "QUERN_MAX_ATTEMPTS",
        "QUERN_JOB_RETENTION",
        "QUERN_TOMBSTONE_RETENTION",
        "QUERN_PRUNE_BATCH_ROWS",
    ] {
        command.env_remove(inherited);
    }
    command.output().await.expect("run quern")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `text` with every run of whitespace made one space.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn json_of(output: &Output) -> Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

/// 400 finished jobs and 40 tombstones two hours old; recent and unfinished ones besides.
async fn fill(db: &TestDatabase) {
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO quern_jobs (job_id, collection, document_id, status, updated_at)
             SELECT gen_random_uuid(), 'docs', 'doc-' || i,
                    (ARRAY['succeeded', 'succeeded', 'succeeded', 'dead', 'running'])[i % 5 + 1],
                    now() - CASE WHEN i <= 500 THEN interval '2 hours' ELSE interval '1 minute' END
             FROM generate_series(1, 600) AS i;
             INSERT INTO quern_document_heads (collection, document_id, version_at, version_job_id, deleted)
             SELECT 'docs', 'gone-' || i,
                    now() - CASE WHEN i <= 40 THEN interval '2 hours' ELSE interval '1 minute' END,
                    gen_random_uuid(), true
             FROM generate_series(1, 50) AS i;",
        )
        .await
        .expect("fill");
}

async fn rows(db: &TestDatabase) -> (i64, i64) {
    let row = db
        .client()
        .await
        .query_one("SELECT (SELECT count(*) FROM quern_jobs), (SELECT count(*) FROM quern_document_heads)", &[])
        .await
        .expect("count");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn prune_counts_then_deletes_and_status_shows_the_run() {
    let db = TestDatabase::create(TEST_DIM).await;
    let queues = TestQueues::new("prune");
    fill(&db).await;
    let hour = ["--job-retention", "1h", "--tombstone-retention", "1h"];

    let before = json_of(&quern(&db, &queues, &["status", "--json"]).await);
    assert_eq!(before["pruning"]["last_run"], Value::Null, "{before}");
    let text = stdout(&quern(&db, &queues, &["status"]).await);
    assert!(text.contains("no prune run yet"), "{text}");

    let dry = json_of(&quern(&db, &queues, &[&["prune", "--dry-run", "--json"][..], &hour].concat()).await);
    assert_eq!(
        (dry["dry_run"].as_bool(), dry["jobs"].as_u64(), dry["tombstones"].as_u64()),
        (Some(true), Some(400), Some(40))
    );
    let text = stdout(&quern(&db, &queues, &[&["prune", "--dry-run"][..], &hour].concat()).await);
    assert!(words(&text).starts_with("would prune 400 finished jobs"), "{text}");
    assert_eq!(rows(&db).await, (600, 50), "a dry run deletes nothing");

    let run = quern(&db, &queues, &[&["prune", "--prune-batch-rows", "64"][..], &hour].concat()).await;
    assert!(run.status.success(), "{run:?}");
    let text = stdout(&run);
    assert!(words(&text).starts_with("pruned 400 finished jobs"), "{text}");
    assert!(words(&text).contains("pruned 40 tombstones (deleted documents"), "{text}");
    assert!(text.contains("refused as stale"), "the watermark is named: {text}");
    assert_eq!(rows(&db).await, (200, 10), "the recent jobs, the unfinished ones and the recent tombstones stay");

    let after = json_of(&quern(&db, &queues, &["status", "--json"]).await);
    let pruning = &after["pruning"];
    assert_eq!(pruning["last_run"]["pruned_by"], "quern prune", "{after}");
    assert_eq!(
        (pruning["last_run"]["jobs"].as_u64(), pruning["last_run"]["tombstones"].as_u64()),
        (Some(400), Some(40))
    );
    assert_eq!(pruning["last_day"]["runs"], 1);
    assert!(pruning["tombstones_pruned_through"].is_string(), "{after}");
    let text = stdout(&quern(&db, &queues, &["status"]).await);
    assert!(text.contains("retention (the whole database)"), "{text}");
    assert!(text.contains("by quern prune): 400 finished jobs, 40 tombstones"), "{text}");

    let again = json_of(&quern(&db, &queues, &[&["prune", "--json"][..], &hour].concat()).await);
    assert_eq!((again["jobs"].as_u64(), again["tombstones"].as_u64()), (Some(0), Some(0)));
    queues.delete().await;
    db.drop_database().await;
}

#[tokio::test]
async fn the_default_tombstone_retention_follows_the_retry_flags() {
    let db = TestDatabase::create(TEST_DIM).await;
    let queues = TestQueues::new("prune_defaults");
    let defaults = json_of(&quern(&db, &queues, &["prune", "--dry-run", "--json"]).await);
    assert_eq!(defaults["job_retention_secs"], 7 * 86_400);
    // 5 attempts × 21 deliveries × 30 min + 1s + 10s + 60s + 5m + a day.
    assert_eq!(defaults["tombstone_retention_secs"], 76 * 3600 + 36 * 60 + 11);
    let longer = json_of(
        &quern(&db, &queues, &["prune", "--dry-run", "--json", "--max-attempts", "6", "--retry-tiers", "1m,1h"]).await,
    );
    // 6 × 21 × 30 min + 1 min + 4 × 1 h + a day.
    assert_eq!(longer["tombstone_retention_secs"], 6 * 21 * 1800 + 60 + 4 * 3600 + 86_400);

    let bad = quern(&db, &queues, &["prune", "--job-retention", "7"]).await;
    assert_eq!(bad.status.code(), Some(2));
    let error = String::from_utf8_lossy(&bad.stderr);
    assert!(error.contains("--job-retention") && error.contains("is not a duration"), "{error}");
    db.drop_database().await;
}
