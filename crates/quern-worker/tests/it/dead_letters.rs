//! Bad input never crashes a worker or disappears: it lands in the dead-letter queue with its reason.

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions};
use quern_queue::headers;
use quern_store::JobStatus;
use quern_testkit::fake_embedder::FakeEmbedderConfig;
use quern_testkit::wait_until;
use tokio_util::sync::CancellationToken;

use crate::helpers::{document_text, upsert, Harness};

struct DeadLetter {
    body: Vec<u8>,
    reason: Option<String>,
    error: Option<String>,
    class: Option<String>,
}

/// Takes every message out of the dead-letter queue.
async fn drain_dead_letters(harness: &Harness) -> Vec<DeadLetter> {
    let connection = quern_queue::connect(&quern_testkit::amqp_url(), "test").await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut letters = Vec::new();
    while let Some(message) = channel
        .basic_get(harness.queues.topology.dead_queue().as_str().into(), BasicGetOptions::default())
        .await
        .expect("basic.get")
    {
        let table = message.delivery.properties.headers().clone();
        letters.push(DeadLetter {
            body: message.delivery.data.clone(),
            reason: headers::get_str(table.as_ref(), headers::REASON),
            error: headers::get_str(table.as_ref(), headers::ERROR),
            class: headers::get_str(table.as_ref(), headers::REASON_CLASS),
        });
        message.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_dead_lettered_with_their_reason_and_good_jobs_still_succeed() {
    let harness = Harness::start("malformed", FakeEmbedderConfig::default()).await;
    let producer = harness.producer().await;
    let named_job_id = uuid::Uuid::new_v4();
    let malformed: Vec<Vec<u8>> = vec![
        vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff],
        b"{\"job_id\": \"\xc3\x28\"}".to_vec(),
        b"not json at all".to_vec(),
        br#"{"job_id": 42, "collection": "c", "document_id": "d", "text": "x"}"#.to_vec(),
        br#"{"job_id": "0190a5c2-7a3e-7cc1-9f3b-2d1f0e6b8a11", "collection": "c", "text": "x"}"#.to_vec(),
        format!(r#"{{"job_id": "{named_job_id}", "collection": "", "document_id": "d", "text": "x"}}"#).into_bytes(),
    ];
    // Publish raw bodies, as a misbehaving client in any language could.
    let (_connection, channel) = harness.queues.raw_channel().await;
    for body in &malformed {
        harness.queues.publish_raw(&channel, body).await;
    }
    let good: Vec<_> = (0..3).map(|i| upsert("c", &format!("good-{i}"), &document_text(i, 60))).collect();
    let good_ids = producer.enqueue_many(&good).await.expect("enqueue");

    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(&[], shutdown.clone());
    let store = harness.db.store();
    let queues = harness.queues.clone();
    let done = wait_until(Duration::from_secs(30), || async {
        let succeeded = store.count_finished(&good_ids).await.map(|c| c.succeeded == 3).unwrap_or(false);
        succeeded && queues.ready_count(&queues.topology.dead_queue()).await == malformed.len() as u32
    })
    .await;
    assert!(!worker.is_finished(), "the worker keeps running");
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    assert!(done, "good jobs did not all succeed or dead letters are missing");

    let letters = drain_dead_letters(&harness).await;
    let bodies: HashSet<Vec<u8>> = letters.iter().map(|l| l.body.clone()).collect();
    assert_eq!(bodies, malformed.iter().cloned().collect::<HashSet<_>>(), "bodies kept byte for byte");
    for letter in &letters {
        assert_eq!(letter.reason.as_deref(), Some("contract"));
        assert_eq!(letter.class.as_deref(), Some("permanent"));
        assert!(letter.error.as_deref().is_some_and(|e| !e.is_empty()));
    }
    let not_json = letters.iter().find(|l| l.body == malformed[2]).expect("present");
    assert_eq!(
        not_json.error.as_deref(),
        Some("the message body is not JSON: expected ident at line 1 column 2"),
        "says what happened"
    );
    let missing_field = letters.iter().find(|l| l.body == malformed[4]).expect("present");
    assert!(missing_field.error.as_deref().unwrap_or_default().contains("document_id"), "{:?}", missing_field.error);
    let record = store.job(named_job_id).await.expect("read").expect("a body with a job_id is recorded");
    assert_eq!(record.status, JobStatus::Dead);
    assert!(record.last_error.unwrap_or_default().contains("collection"));
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_embedder_refuses_is_dead_with_its_reason() {
    // The embedder's content policy refuses this document with 400, which no retry can fix.
    let refusing = FakeEmbedderConfig { reject_marker: Some("FORBIDDEN".into()), ..FakeEmbedderConfig::default() };
    let harness = Harness::start("refused", refusing).await;
    let producer = harness.producer().await;
    let refused = upsert("c", "big", &format!("{} FORBIDDEN", document_text(1, 400)));
    let fine = upsert("c", "small", "just a few words");
    let ids = producer.enqueue_many(&[refused.clone(), fine.clone()]).await.expect("enqueue");

    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(&[], shutdown.clone());
    let store = harness.db.store();
    let finished = wait_until(Duration::from_secs(30), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 1 && c.dead == 1).unwrap_or(false)
    })
    .await;
    let queues = harness.queues.clone();
    let dead_lettered =
        wait_until(Duration::from_secs(10), || async { queues.ready_count(&queues.topology.dead_queue()).await == 1 })
            .await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    assert!(finished && dead_lettered);

    let record = store.job(refused.job_id).await.expect("read").expect("recorded");
    assert_eq!(record.status, JobStatus::Dead);
    assert!(record.last_error.as_deref().unwrap_or_default().contains("400"), "{:?}", record.last_error);
    let letters = drain_dead_letters(&harness).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body, refused.encode());
    assert_eq!(letters[0].reason.as_deref(), Some("embedding_rejected"));
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_panics_is_dead_lettered_and_the_worker_carries_on() {
    let harness = Harness::start("panic", FakeEmbedderConfig::default()).await;
    let producer = harness.producer().await;
    // The worker's tests build it with the `fault-injection` feature: this text makes the job panic.
    let poison = upsert("c", "poison", "QUERN_FAULT_PANIC in the middle of a document");
    let after = upsert("c", "after", "an ordinary document after the poison");
    producer.enqueue(&poison).await.expect("enqueue");
    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(&[], shutdown.clone());
    let store = harness.db.store();
    let dead = wait_until(Duration::from_secs(20), || async {
        store.job(poison.job_id).await.ok().flatten().is_some_and(|r| r.status == JobStatus::Dead)
    })
    .await;
    producer.enqueue(&after).await.expect("enqueue");
    let carried_on = wait_until(Duration::from_secs(20), || async {
        store.job(after.job_id).await.ok().flatten().is_some_and(|r| r.status == JobStatus::Succeeded)
    })
    .await;
    assert!(!worker.is_finished(), "the worker is still running");
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    assert!(dead, "the panicking job is recorded dead");
    assert!(carried_on, "the next job succeeds");
    let letters = drain_dead_letters(&harness).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason.as_deref(), Some("panic"));
    assert!(letters[0].error.as_deref().unwrap_or_default().contains("QUERN_FAULT_PANIC"));
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_chunk_fails_alone_even_when_it_shared_a_request_with_other_jobs() {
    // One request in flight and a slow embedder: the 31 one-chunk jobs queue up and share requests.
    let embedder =
        FakeEmbedderConfig { latency_ms: 50, reject_marker: Some("FORBIDDEN".into()), ..FakeEmbedderConfig::default() };
    let harness = Harness::start("isolate", embedder).await;
    let producer = harness.producer().await;
    let mut jobs: Vec<_> =
        (0..30).map(|i| upsert("c", &format!("fine-{i}"), &format!("an ordinary note {i}"))).collect();
    let refused = upsert("c", "refused", "this note carries a FORBIDDEN word");
    jobs.insert(15, refused.clone());
    let ids = producer.enqueue_many(&jobs).await.expect("enqueue");

    let shutdown = CancellationToken::new();
    let worker =
        harness.spawn_worker(&["--embedding-concurrency", "1", "--embedding-linger-ms", "20"], shutdown.clone());
    let store = harness.db.store();
    let settled = wait_until(Duration::from_secs(30), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 30 && c.dead == 1).unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    let stats = harness.embedder.stats().snapshot();
    assert!(settled, "30 succeed and only the refused job dies: {stats:?}");
    assert_eq!(store.job(refused.job_id).await.expect("read").expect("recorded").status, JobStatus::Dead);
    assert!(stats.rejected_400 >= 2, "the refused chunk shared a request that was split: {stats:?}");
    assert_eq!(stats.inputs, 30, "every other chunk embedded once: {stats:?}");
    let letters = drain_dead_letters(&harness).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body, refused.encode());
    harness.cleanup().await;
}
