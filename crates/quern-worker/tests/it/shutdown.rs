//! SIGTERM mid-run: the worker process finishes in-flight jobs, exits 0, and nothing is lost.

use std::process::Stdio;
use std::time::Duration;

use quern_testkit::fake_embedder::FakeEmbedderConfig;
use quern_testkit::wait_until;
use tokio_util::sync::CancellationToken;

use crate::helpers::{document_text, upsert, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_0_then_another_worker_finishes_every_job() {
    // A slow embedder keeps jobs in flight when the signal arrives.
    let harness =
        Harness::start("sigterm", FakeEmbedderConfig { latency_ms: 100, ..FakeEmbedderConfig::default() }).await;
    let producer = harness.producer().await;
    let jobs: Vec<_> = (0..120).map(|i| upsert("c", &format!("doc-{i}"), &document_text(i, 80))).collect();
    let ids = producer.enqueue_many(&jobs).await.expect("enqueue");

    let args = harness.worker_args(&["--prefetch", "8", "--embedding-concurrency", "4"]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern-worker"))
        .args(&args[1..])
        .env_remove("QUERN_EMBEDDING_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start quern-worker");
    let store = harness.db.store();
    let started = wait_until(Duration::from_secs(30), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded >= 5).unwrap_or(false)
    })
    .await;
    assert!(started, "the worker process made no progress");

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within the grace period")
        .expect("wait");
    let finished_at_exit = store.count_finished(&ids).await.expect("count").succeeded;
    assert_eq!(status.code(), Some(0), "graceful exit");
    assert!(finished_at_exit < 120, "the run was interrupted, not finished before the signal");

    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(&[], shutdown.clone());
    let all = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 120).unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    assert!(all, "every job succeeds after the restart");
    assert_eq!(harness.queues.ready_count(&harness.queues.topology.ingest_queue()).await, 0);
    assert_eq!(harness.db.duplicate_chunk_rows().await, 0);
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_the_broker_redelivers() {
    // An embedder slow enough that the drain after the first signal would take many seconds.
    let harness =
        Harness::start("second_signal", FakeEmbedderConfig { latency_ms: 20_000, ..FakeEmbedderConfig::default() })
            .await;
    let producer = harness.producer().await;
    let jobs: Vec<_> = (0..5).map(|i| upsert("c", &format!("doc-{i}"), &document_text(i, 40))).collect();
    let ids = producer.enqueue_many(&jobs).await.expect("enqueue");
    let args = harness.worker_args(&["--shutdown-grace-secs", "60"]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern-worker"))
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start quern-worker");
    let embedder = harness.embedder.stats().clone();
    assert!(
        wait_until(Duration::from_secs(30), || async { embedder.snapshot().in_flight > 0 }).await,
        "jobs in flight"
    );
    let pid = child.id().expect("running").to_string();
    let signal = || std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(signal().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().expect("poll").is_none(), "the first signal drains: still running");
    assert!(signal().success());
    let status =
        tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exits at once").expect("wait");
    assert_eq!(status.code(), Some(130), "the second signal exits without draining");
    let succeeded = harness.db.store().count_finished(&ids).await.expect("count").succeeded;
    assert_eq!(succeeded, 0, "nothing finished; every job goes back to the queue");
    let queues = harness.queues.clone();
    let returned = wait_until(Duration::from_secs(10), || async {
        queues.ready_count(&queues.topology.ingest_queue()).await == 5
    })
    .await;
    assert!(returned, "the broker holds all five jobs again");
    harness.cleanup().await;
}
