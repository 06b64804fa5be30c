//! Re-ingesting replaces a document's chunks atomically; delete removes everything; empty documents succeed.

use quern_core::{Job, Outcome};
use quern_store::JobStatus;
use quern_testkit::fake_embedder::FakeEmbedderConfig;

use crate::helpers::{document_text, test_chunker, upsert, Harness};

async fn chunk_contents(harness: &Harness, document_id: &str) -> Vec<String> {
    let client = harness.db.client().await;
    client
        .query(
            "SELECT content FROM quern_chunks WHERE collection = 'c' AND document_id = $1 ORDER BY chunk_index",
            &[&document_id],
        )
        .await
        .expect("chunks")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_a_document_from_10_chunks_to_3_leaves_exactly_3_and_delete_leaves_none() {
    let harness = Harness::start("reingest", FakeEmbedderConfig::default()).await;
    let pipeline = harness.pipeline(&[]).await;
    let chunker = test_chunker();
    let long = (0..600).map(|w| document_text(7, w)).find(|t| chunker.split(t).len() == 10).expect("a 10-chunk text");
    let short = (0..200).map(|w| document_text(8, w)).find(|t| chunker.split(t).len() == 3).expect("a 3-chunk text");

    assert_eq!(pipeline.process_delivery(&upsert("c", "doc", &long).encode(), 0).await, Outcome::Ack);
    assert_eq!(chunk_contents(&harness, "doc").await.len(), 10);

    let shrink = upsert("c", "doc", &short);
    assert_eq!(pipeline.process_delivery(&shrink.encode(), 0).await, Outcome::Ack);
    let contents = chunk_contents(&harness, "doc").await;
    assert_eq!(contents, chunker.split(&short).iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let record = harness.db.store().job(shrink.job_id).await.expect("read").expect("recorded");
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.chunk_count, Some(3));

    let delete = Job::delete("c", "doc");
    assert_eq!(pipeline.process_delivery(&delete.encode(), 0).await, Outcome::Ack);
    assert!(chunk_contents(&harness, "doc").await.is_empty());
    let client = harness.db.client().await;
    let documents: i64 = client.query_one("SELECT count(*) FROM quern_documents", &[]).await.expect("count").get(0);
    assert_eq!(documents, 0);
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_document_makes_no_chunks_and_succeeds() {
    let harness = Harness::start("empty", FakeEmbedderConfig::default()).await;
    let pipeline = harness.pipeline(&[]).await;
    let job = upsert("c", "empty", "");
    assert_eq!(pipeline.process_delivery(&job.encode(), 0).await, Outcome::Ack);
    let record = harness.db.store().job(job.job_id).await.expect("read").expect("recorded");
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.chunk_count, Some(0));
    assert_eq!(harness.embedder.stats().snapshot().requests, 0, "nothing to embed");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_job_that_already_succeeded_is_acked_without_new_work() {
    let harness = Harness::start("redeliver", FakeEmbedderConfig::default()).await;
    let pipeline = harness.pipeline(&[]).await;
    let job = upsert("c", "doc", &document_text(3, 120));
    assert_eq!(pipeline.process_delivery(&job.encode(), 0).await, Outcome::Ack);
    let requests = harness.embedder.stats().snapshot().requests;
    assert_eq!(pipeline.process_delivery(&job.encode(), 0).await, Outcome::Ack);
    assert_eq!(harness.embedder.stats().snapshot().requests, requests, "no second embedding");
    assert_eq!(chunk_contents(&harness, "doc").await.len(), test_chunker().split(&job.text).len());
    harness.cleanup().await;
}
