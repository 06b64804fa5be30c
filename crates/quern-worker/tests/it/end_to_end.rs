//! 200 documents through the producer, two workers, every chunk stored exactly once.

use std::collections::HashMap;
use std::time::Duration;

use quern_testkit::fake_embedder::FakeEmbedderConfig;
use quern_testkit::{wait_until, TEST_DIM};
use tokio_util::sync::CancellationToken;

use crate::helpers::{document_text, test_chunker, upsert, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_ingest_200_documents_exactly_once() {
    let harness = Harness::start("e2e", FakeEmbedderConfig::default()).await;
    let producer = harness.producer().await;
    let jobs: Vec<_> = (0..200)
        .map(|i| upsert("books", &format!("doc-{i:03}"), &document_text(i, 40 + (i as usize % 7) * 40)))
        .collect();
    let expected_chunks: HashMap<String, usize> =
        jobs.iter().map(|job| (job.document_id.clone(), test_chunker().split(&job.text).len())).collect();
    let job_ids = producer.enqueue_many(&jobs).await.expect("enqueue");
    assert_eq!(job_ids.len(), 200);

    let shutdown = CancellationToken::new();
    let workers = [
        harness.spawn_worker(&["--worker-id", "w1"], shutdown.clone()),
        harness.spawn_worker(&["--worker-id", "w2"], shutdown.clone()),
    ];
    let store = harness.db.store();
    let finished = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&job_ids).await.map(|c| c.succeeded == 200).unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    for worker in workers {
        worker.await.expect("worker task").expect("worker exits cleanly");
    }
    assert!(finished, "not every job succeeded in time");

    let client = harness.db.client().await;
    let rows = client
        .query("SELECT document_id, count(*), count(DISTINCT chunk_index), min(vector_dims(embedding)), max(vector_dims(embedding)) FROM quern_chunks WHERE collection = 'books' GROUP BY document_id", &[])
        .await
        .expect("query chunks");
    assert_eq!(rows.len(), 200, "every document has chunks");
    for row in rows {
        let document_id: String = row.get(0);
        let count: i64 = row.get(1);
        let distinct: i64 = row.get(2);
        assert_eq!(count as usize, expected_chunks[&document_id], "{document_id}");
        assert_eq!(count, distinct, "{document_id} has a duplicated chunk");
        assert_eq!(row.get::<_, i32>(3) as usize, TEST_DIM);
        assert_eq!(row.get::<_, i32>(4) as usize, TEST_DIM);
    }
    let statuses =
        client.query("SELECT status, count(*) FROM quern_jobs GROUP BY status", &[]).await.expect("statuses");
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].get::<_, &str>(0), "succeeded");
    assert_eq!(statuses[0].get::<_, i64>(1), 200);
    assert_eq!(harness.queues.ready_count(&harness.queues.topology.ingest_queue()).await, 0);
    assert_eq!(harness.queues.ready_count(&harness.queues.topology.dead_queue()).await, 0);
    let stats = harness.embedder.stats().snapshot();
    let total_chunks: usize = expected_chunks.values().sum();
    assert_eq!(stats.inputs as usize, total_chunks, "each chunk embedded once");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_finds_the_document_that_shares_words() {
    let harness = Harness::start("search", FakeEmbedderConfig::default()).await;
    let pipeline = harness.pipeline(&[]).await;
    let texts = [
        ("harbour", "the harbour lantern signal guided every ship past the stone beacon"),
        ("orchard", "apples in the orchard ripen before winter harvest in the valley"),
        ("ledger", "the copper ledger in the archive recorded every grain sold at the mill"),
    ];
    for (id, text) in texts {
        assert_eq!(pipeline.process_delivery(&upsert("c", id, text).encode(), 0).await, quern_core::Outcome::Ack);
    }
    let query = quern_testkit::fake_embedder::embed_text("which ledger recorded the grain", TEST_DIM);
    let hits = harness.db.store().search("c", pgvector::Vector::from(query), 3).await.expect("search");
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].document_id, "ledger");
    assert!(hits[0].score > hits[1].score);
    assert!(harness
        .db
        .store()
        .search("other", pgvector::Vector::from(vec![1.0; TEST_DIM]), 3)
        .await
        .expect("search")
        .is_empty());
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_many_jobs_share_requests_and_each_vector_goes_back_to_its_own_chunk() {
    // A slow embedder keeps requests in flight, so one-chunk jobs pile up and share the next request.
    let harness =
        Harness::start("xbatch", FakeEmbedderConfig { latency_ms: 50, ..FakeEmbedderConfig::default() }).await;
    let producer = harness.producer().await;
    let jobs: Vec<_> = (0..120)
        .map(|i| upsert("c", &format!("one-{i}"), &format!("short note number {i} about {}", document_text(i, 6))))
        .collect();
    let ids = producer.enqueue_many(&jobs).await.expect("enqueue");
    let shutdown = CancellationToken::new();
    let worker = harness
        .spawn_worker(&["--embedding-concurrency", "2", "--batch-size", "16", "--prefetch", "64"], shutdown.clone());
    let store = harness.db.store();
    let done = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 120).unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    assert!(done);
    let stats = harness.embedder.stats().snapshot();
    assert_eq!(stats.inputs, 120, "each chunk embedded once");
    assert!(stats.requests <= 30, "one-chunk jobs shared requests: {} requests for 120 chunks", stats.requests);
    let client = harness.db.client().await;
    for row in client.query("SELECT content, embedding FROM quern_chunks", &[]).await.expect("chunks") {
        let content: String = row.get(0);
        let stored = row.get::<_, pgvector::Vector>(1).to_vec();
        let expected = quern_testkit::fake_embedder::embed_text(&content, TEST_DIM);
        assert!(
            stored.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6),
            "{content:?} got another chunk's vector"
        );
    }
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_larger_than_the_provider_takes_are_split_until_they_fit() {
    // The provider takes at most 3 inputs; the worker packs up to 8: a 400 for the size, not for a chunk.
    let harness = Harness::start("split", FakeEmbedderConfig { max_batch: 3, ..FakeEmbedderConfig::default() }).await;
    let pipeline = harness.pipeline(&[]).await;
    let job = upsert("c", "doc", &document_text(9, 300));
    assert!(test_chunker().split(&job.text).len() > 3);
    assert_eq!(pipeline.process_delivery(&job.encode(), 0).await, quern_core::Outcome::Ack);
    let stats = harness.embedder.stats().snapshot();
    assert!(stats.rejected_400 >= 1 && stats.inputs as usize == test_chunker().split(&job.text).len(), "{stats:?}");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_requests_stay_within_the_providers_size_limit() {
    // The provider takes at most 1,000 characters per request (413 beyond); the worker budgets 200 tokens of
    // 4 characters (800 characters), so requests of one-chunk jobs stop short of the limit instead of being split.
    let embedder = FakeEmbedderConfig { latency_ms: 50, max_request_chars: 1000, ..FakeEmbedderConfig::default() };
    let harness = Harness::start("tokens", embedder).await;
    let producer = harness.producer().await;
    let jobs: Vec<_> =
        (0..60).map(|i| upsert("c", &format!("n-{i}"), &format!("{} {i}", "word ".repeat(28)))).collect();
    let ids = producer.enqueue_many(&jobs).await.expect("enqueue");
    let shutdown = CancellationToken::new();
    let flags = [
        "--embedding-concurrency",
        "1",
        "--batch-size",
        "32",
        "--batch-max-tokens",
        "200",
        "--embedding-linger-ms",
        "20",
    ];
    let worker = harness.spawn_worker(&flags, shutdown.clone());
    let store = harness.db.store();
    let done = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 60).unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    let stats = harness.embedder.stats().snapshot();
    assert!(done, "{stats:?}");
    assert_eq!(stats.rejected_400, 0, "no request went over the provider's limit: {stats:?}");
    assert_eq!(stats.inputs, 60);
    assert!(stats.requests < 60, "requests were still shared: {stats:?}");
    harness.cleanup().await;
}
