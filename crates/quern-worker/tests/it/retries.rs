//! Job-level retries through delay queues: attempts counted in Quern's header, throttling not counted,
//! dead-lettered as transient once attempts run out.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions};
use quern_queue::headers;
use quern_store::JobStatus;
use quern_testkit::fake_embedder::FakeEmbedderConfig;
use quern_testkit::wait_until;
use tokio_util::sync::CancellationToken;

use crate::helpers::{document_text, upsert, Harness};

/// Fast tiers and no per-request retries, so each job attempt is exactly one embedding request.
const FAST_RETRIES: &[&str] =
    &["--retry-tiers", "100ms,200ms", "--embedding-retry-max-secs", "0", "--max-attempts", "3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_walks_the_tiers_then_is_dead_as_transient() {
    let harness = Harness::start("retry_dead", FakeEmbedderConfig { error_rate: 1.0, ..Default::default() }).await;
    let producer = harness.producer().await;
    let job = upsert("c", "doc", "a short document that fits in one chunk");
    producer.enqueue(&job).await.expect("enqueue");

    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(FAST_RETRIES, shutdown.clone());
    let store = harness.db.store();
    let dead = wait_until(Duration::from_secs(20), || async {
        store.job(job.job_id).await.ok().flatten().is_some_and(|r| r.status == JobStatus::Dead)
    })
    .await;
    let queues = harness.queues.clone();
    let dead_lettered =
        wait_until(Duration::from_secs(10), || async { queues.ready_count(&queues.topology.dead_queue()).await == 1 })
            .await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    assert!(dead && dead_lettered, "the job ends dead in the dead-letter queue");

    assert_eq!(harness.embedder.stats().snapshot().requests, 3, "one request per attempt, three attempts");
    let record = store.job(job.job_id).await.expect("read").expect("recorded");
    assert_eq!(record.attempts, 3);
    assert!(record.last_error.unwrap_or_default().contains("500"));

    let connection = quern_queue::connect(&quern_testkit::amqp_url(), "test").await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let letter = channel
        .basic_get(harness.queues.topology.dead_queue().as_str().into(), BasicGetOptions::default())
        .await
        .expect("get")
        .expect("a dead letter");
    let table = letter.delivery.properties.headers().clone();
    assert_eq!(headers::get_str(table.as_ref(), headers::REASON_CLASS).as_deref(), Some("transient"));
    assert_eq!(headers::get_str(table.as_ref(), headers::REASON).as_deref(), Some("embedding_server_error"));
    assert_eq!(headers::get_i64(table.as_ref(), headers::ATTEMPTS), Some(3));
    assert_eq!(
        headers::get_str(table.as_ref(), headers::ORIGINAL_EXCHANGE),
        Some(harness.queues.topology.work_exchange())
    );
    let first = headers::get_i64(table.as_ref(), headers::FIRST_FAILURE_AT_MS).expect("first failure");
    let last = headers::get_i64(table.as_ref(), headers::LAST_FAILURE_AT_MS).expect("last failure");
    assert!(last - first >= 300, "the tiers waited 100 + 200 ms between failures, got {} ms", last - first);
    assert_eq!(letter.delivery.data, job.encode(), "body kept byte for byte");
    letter.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_does_not_use_up_attempts() {
    let harness = Harness::start("throttle", FakeEmbedderConfig { throttle_rate: 1.0, ..Default::default() }).await;
    let producer = harness.producer().await;
    let job = upsert("c", "doc", "a short document");
    producer.enqueue(&job).await.expect("enqueue");

    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(
        &["--retry-tiers", "100ms", "--embedding-retry-max-secs", "0", "--max-attempts", "1"],
        shutdown.clone(),
    );
    let embedder = harness.embedder.stats().clone();
    let retried = wait_until(Duration::from_secs(20), || async { embedder.snapshot().throttled_429 >= 4 }).await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    assert!(retried, "the throttled job keeps being retried");
    let record = harness.db.store().job(job.job_id).await.expect("read").expect("recorded");
    assert_ne!(record.status, JobStatus::Dead, "max attempts is 1, yet four throttled tries did not kill the job");
    assert_eq!(harness.queues.ready_count(&harness.queues.topology.dead_queue()).await, 0);
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_succeed_through_500s_and_429s_without_duplicates() {
    let faults = FakeEmbedderConfig { error_rate: 0.3, throttle_rate: 0.1, ..Default::default() };
    let harness = Harness::start("faults", faults).await;
    let producer = harness.producer().await;
    let jobs: Vec<_> = (0..60).map(|i| upsert("c", &format!("doc-{i}"), &document_text(i, 50))).collect();
    let ids = producer.enqueue_many(&jobs).await.expect("enqueue");

    let shutdown = CancellationToken::new();
    // Batches of 2: the 60 jobs then make 70-odd requests, so both faults are drawn for certain (at the default
    // batch size the whole run fits in ~25 requests, and none drew a 429 in about 1 run in 17).
    let worker = harness.spawn_worker(
        &[
            "--retry-tiers",
            "100ms,200ms",
            "--embedding-retry-max-secs",
            "0",
            "--max-attempts",
            "50",
            "--batch-size",
            "2",
        ],
        shutdown.clone(),
    );
    let store = harness.db.store();
    let all = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 60).unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    assert!(all, "every job succeeds despite the faults");
    let stats = harness.embedder.stats().snapshot();
    assert!(stats.errors_500 > 0 && stats.throttled_429 > 0, "faults were injected: {stats:?}");
    assert_eq!(harness.db.duplicate_chunk_rows().await, 0);
    assert_eq!(
        harness.queues.ready_count(&harness.queues.topology.dead_queue()).await,
        0,
        "transient faults dead-letter nothing"
    );
    harness.cleanup().await;
}
