//! Embedding calls cost money: unchanged documents and unchanged chunks are not embedded again. And of two
//! jobs for one document, the later one's state is what remains, whatever order they run in.

use std::time::Duration;

use quern_core::{Job, Outcome};
use quern_store::JobStatus;
use quern_testkit::fake_embedder::{embed_text, FakeEmbedderConfig};
use quern_testkit::{wait_until, TEST_DIM};
use tokio_util::sync::CancellationToken;

use crate::helpers::{document_text, test_chunker, upsert, Harness};

async fn stored_chunks(harness: &Harness, document_id: &str) -> Vec<(String, Vec<f32>)> {
    let client = harness.db.client().await;
    client
        .query(
            "SELECT content, embedding FROM quern_chunks WHERE collection = 'c' AND document_id = $1 ORDER BY chunk_index",
            &[&document_id],
        )
        .await
        .expect("chunks")
        .into_iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, pgvector::Vector>(1).to_vec()))
        .collect()
}

/// Ten paragraphs of about 150 characters, so each makes about one chunk of the test chunker.
fn paragraphs(seed: u64) -> Vec<String> {
    (0..10).map(|i| document_text(seed * 100 + i, 20).trim().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_document_is_not_embedded_again() {
    let harness = Harness::start("unchanged", FakeEmbedderConfig::default()).await;
    let pipeline = harness.pipeline(&[]).await;
    let text = document_text(5, 200);
    assert_eq!(pipeline.process_delivery(&upsert("c", "doc", &text).encode(), 0).await, Outcome::Ack);
    let after_first = harness.embedder.stats().snapshot();
    assert!(after_first.inputs > 0);

    let mut metadata = serde_json::Map::new();
    metadata.insert("revision".into(), 2.into());
    let again = upsert("c", "doc", &text).with_metadata(metadata);
    assert_eq!(pipeline.process_delivery(&again.encode(), 0).await, Outcome::Ack);
    assert_eq!(harness.embedder.stats().snapshot().requests, after_first.requests, "no embedding call");
    let record = harness.db.store().job(again.job_id).await.expect("read").expect("recorded");
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.chunk_count, Some(test_chunker().split(&text).len() as i32));
    let client = harness.db.client().await;
    let metadata: serde_json::Value =
        client.query_one("SELECT metadata FROM quern_documents", &[]).await.expect("document").get(0);
    assert_eq!(metadata["revision"], 2, "metadata still follows the latest job");
    assert_eq!(stored_chunks(&harness, "doc").await.len(), test_chunker().split(&text).len());
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_change_embeds_only_the_changed_chunks() {
    let harness = Harness::start("partial", FakeEmbedderConfig::default()).await;
    let pipeline = harness.pipeline(&[]).await;
    let mut parts = paragraphs(1);
    let original = parts.join("\n\n");
    assert_eq!(pipeline.process_delivery(&upsert("c", "doc", &original).encode(), 0).await, Outcome::Ack);
    let first = harness.embedder.stats().snapshot().inputs;
    let chunk_count = test_chunker().split(&original).len() as u64;
    assert_eq!(first, chunk_count);

    parts[9] = "an entirely new closing paragraph about lighthouses and tides".to_owned();
    let revised = parts.join("\n\n");
    assert_eq!(pipeline.process_delivery(&upsert("c", "doc", &revised).encode(), 0).await, Outcome::Ack);
    let second = harness.embedder.stats().snapshot().inputs - first;
    let new_chunks = test_chunker().split(&revised);
    let saved = new_chunks.len() as u64 - second;
    println!(
        "re-ingest of {} chunks with one paragraph changed: {second} embedded, {saved} embedding inputs saved",
        new_chunks.len()
    );
    assert!((1..=2).contains(&second), "only the changed chunk(s) are embedded, got {second}");
    assert!(saved >= new_chunks.len() as u64 - 2);

    // Every stored vector belongs to its own chunk's text: reuse did not shuffle them.
    let stored = stored_chunks(&harness, "doc").await;
    assert_eq!(stored.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), new_chunks);
    for (content, vector) in stored {
        let expected = embed_text(&content, TEST_DIM);
        assert!(vector.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6), "vector of {content:?}");
    }
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_text_that_recurs_is_embedded_once_and_stored_in_every_place() {
    let harness = Harness::start("recurring", FakeEmbedderConfig::default()).await;
    let pipeline = harness.pipeline(&[]).await;
    let parts = paragraphs(3);
    let text = [&parts[0], &parts[1], &parts[0], &parts[2], &parts[0]].map(String::as_str).join("\n\n");
    assert_eq!(pipeline.process_delivery(&upsert("c", "doc", &text).encode(), 0).await, Outcome::Ack);
    let chunks = test_chunker().split(&text);
    let distinct: std::collections::HashSet<&str> = chunks.iter().copied().collect();
    assert!(distinct.len() < chunks.len(), "the test needs a recurring chunk: {chunks:?}");
    assert_eq!(harness.embedder.stats().snapshot().inputs, distinct.len() as u64, "each distinct text once");
    let stored = stored_chunks(&harness, "doc").await;
    assert_eq!(stored.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), chunks);
    for (content, vector) in stored {
        let expected = embed_text(&content, TEST_DIM);
        assert!(vector.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6), "vector of {content:?}");
    }
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_job_that_runs_last_does_not_overwrite_the_newer_state() {
    let harness = Harness::start("ordering", FakeEmbedderConfig::default()).await;
    let pipeline = harness.pipeline(&[]).await;
    let older = upsert("c", "doc", "the older text about a windmill");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let newer = upsert("c", "doc", "the newer text about a lighthouse");
    assert_eq!(pipeline.process_delivery(&newer.encode(), 0).await, Outcome::Ack);
    assert_eq!(pipeline.process_delivery(&older.encode(), 0).await, Outcome::Ack);
    let contents: Vec<String> = stored_chunks(&harness, "doc").await.into_iter().map(|(c, _)| c).collect();
    assert_eq!(contents, ["the newer text about a lighthouse"]);
    let record = harness.db.store().job(older.job_id).await.expect("read").expect("recorded");
    assert_eq!(record.status, JobStatus::Succeeded, "superseded jobs still succeed");
    assert_eq!(record.chunk_count, None, "but wrote nothing");

    // A delete is a version too: an older upsert arriving after it does not bring the document back.
    let first = upsert("c", "gone", "first version");
    let stale = upsert("c", "gone", "a stale version");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let delete = Job::delete("c", "gone");
    assert_eq!(pipeline.process_delivery(&first.encode(), 0).await, Outcome::Ack);
    assert_eq!(pipeline.process_delivery(&delete.encode(), 0).await, Outcome::Ack);
    assert_eq!(pipeline.process_delivery(&stale.encode(), 0).await, Outcome::Ack);
    assert!(stored_chunks(&harness, "gone").await.is_empty());
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_on_one_document_leave_the_last_version() {
    let harness =
        Harness::start("race", FakeEmbedderConfig { latency_ms: 5, jitter_ms: 20, ..Default::default() }).await;
    let producer = harness.producer().await;
    let versions: Vec<Job> =
        (0..30).map(|i| upsert("c", "doc", &format!("version {i} {}", document_text(i, 40)))).collect();
    let ids = producer.enqueue_many(&versions).await.expect("enqueue");

    let shutdown = CancellationToken::new();
    let workers = [harness.spawn_worker(&[], shutdown.clone()), harness.spawn_worker(&[], shutdown.clone())];
    let store = harness.db.store();
    let done = wait_until(Duration::from_secs(30), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 30).unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    for worker in workers {
        worker.await.expect("task").expect("clean exit");
    }
    assert!(done);
    let contents: Vec<String> = stored_chunks(&harness, "doc").await.into_iter().map(|(c, _)| c).collect();
    let last = &versions[29].text;
    assert_eq!(contents, test_chunker().split(last), "the document holds exactly the last version's chunks");
    harness.cleanup().await;
}
