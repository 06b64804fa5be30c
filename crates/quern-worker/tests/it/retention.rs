//! Retention in the worker: the lease holder prunes finished jobs and tombstones as jobs flow, so a few thousand
//! jobs with a short retention leave the tables bounded (and every job accounted for in the recorded runs); a job
//! older than the pruned tombstones is dead-lettered as stale rather than bringing a deleted document back; and the
//! tombstone retention follows the worker's own retry flags.

use std::time::Duration;

use quern_core::{ErrorClass, Job, Outcome};
use quern_store::{JobStatus, RetentionPolicy};
use quern_testkit::fake_embedder::FakeEmbedderConfig;
use quern_testkit::wait_until;
use tokio_util::sync::CancellationToken;

use crate::helpers::{upsert, Harness};

/// `job` with a UUIDv7 id of `minutes_ago` minutes ago: its version, as a producer would have made it then.
fn made_ago(mut job: Job, minutes_ago: u64) -> Job {
    let at = std::time::SystemTime::now() - Duration::from_secs(minutes_ago * 60);
    let since_epoch = at.duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    let timestamp = uuid::Timestamp::from_unix(uuid::NoContext, since_epoch.as_secs(), since_epoch.subsec_nanos());
    job.job_id = uuid::Uuid::new_v7(timestamp);
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_older_than_the_pruned_tombstones_is_dead_lettered_as_stale() {
    let harness = Harness::start("stale", FakeEmbedderConfig::default()).await;
    let pipeline = harness.pipeline(&[]).await;
    let store = harness.db.store();
    let written = made_ago(upsert("c", "gone", "a document deleted later"), 180);
    assert_eq!(pipeline.process_delivery(&written.encode(), 0).await, Outcome::Ack);
    assert_eq!(pipeline.process_delivery(&made_ago(Job::delete("c", "gone"), 120).encode(), 0).await, Outcome::Ack);
    let hour = Duration::from_secs(3600);
    let policy = RetentionPolicy { job_retention: hour, tombstone_retention: hour, batch_rows: 100 };
    assert_eq!(store.prune(&policy, "test", &|| true).await.expect("prune").tombstones, 1);

    // A late copy of a job from before the delete (a dead letter replayed, say): refused, nothing written.
    let late = made_ago(upsert("c", "gone", "a document deleted later"), 150);
    let Outcome::DeadLetter { failure, failed_attempts } = pipeline.process_delivery(&late.encode(), 0).await else {
        panic!("a stale job is dead-lettered")
    };
    assert_eq!((failure.class, failure.reason.as_str(), failed_attempts), (ErrorClass::Permanent, "stale", 1));
    assert!(failure.detail.contains("enqueue the document again"), "{}", failure.detail);
    let record = store.job(late.job_id).await.expect("read").expect("recorded");
    assert_eq!(record.status, JobStatus::Dead);
    assert!(record.last_error.unwrap_or_default().starts_with("stale job"));
    let client = harness.db.client().await;
    let documents: i64 = client.query_one("SELECT count(*) FROM quern_documents", &[]).await.unwrap().get(0);
    assert_eq!(documents, 0, "the deleted document stays deleted");

    // A late delete finds the document absent, as it asks; the document enqueued again (a new job) is written.
    assert_eq!(pipeline.process_delivery(&made_ago(Job::delete("c", "gone"), 170).encode(), 0).await, Outcome::Ack);
    let again = upsert("c", "gone", "a document deleted later");
    assert_eq!(pipeline.process_delivery(&again.encode(), 0).await, Outcome::Ack);
    let documents: i64 = client.query_one("SELECT count(*) FROM quern_documents", &[]).await.unwrap().get(0);
    assert_eq!(documents, 1);
    harness.cleanup().await;
}

/// `(job rows, tombstones)` now.
async fn bookkeeping(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM quern_jobs),
                    (SELECT count(*) FROM quern_document_heads WHERE deleted)",
            &[],
        )
        .await
        .expect("count");
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_few_thousand_jobs_with_a_short_retention_leave_the_tables_bounded() {
    let harness = Harness::start("retention", FakeEmbedderConfig::default()).await;
    let producer = harness.producer().await;
    let stop = CancellationToken::new();
    let flags = ["--job-retention", "1s", "--tombstone-retention", "1s", "--prune-every", "200ms"];
    let worker = harness.spawn_worker(&flags, stop.clone());
    let client = harness.db.client().await;

    // Six waves of 500 tiny jobs, a second apart: 2,000 upserts, then 1,000 deletes of the first 1,000 documents.
    let mut peak = (0, 0);
    for wave in 0..6 {
        let jobs: Vec<Job> = (wave * 500..wave * 500 + 500)
            .map(|i| match i {
                0..2000 => upsert("c", &format!("doc-{i}"), &format!("tiny document {i}")),
                _ => Job::delete("c", format!("doc-{}", i - 2000)),
            })
            .collect();
        producer.enqueue_many(&jobs).await.expect("enqueue");
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (jobs, tombstones) = bookkeeping(&client).await;
            peak = (peak.0.max(jobs), peak.1.max(tombstones));
        }
    }

    // Every job is accounted for by the recorded prune runs, and the tables empty out.
    let store = harness.db.store();
    let settled = wait_until(Duration::from_secs(60), || async {
        let history = store.prune_history().await.ok().flatten();
        let accounted = history.is_some_and(|h| h.jobs_last_day == 3000 && h.tombstones_last_day == 1000);
        accounted && bookkeeping(&client).await == (0, 0)
    })
    .await;
    let history = store.prune_history().await.unwrap().expect("migration 6");
    assert!(settled, "not every job pruned: {history:?}, rows left {:?}", bookkeeping(&client).await);
    assert!(history.runs_last_day >= 5, "pruned as the jobs flowed: {history:?}");
    assert!(history.last.as_ref().is_some_and(|run| run.pruned_by.starts_with("worker ")), "{history:?}");
    // Bounded: at any moment about the last second's jobs (the pace of the waves), never the whole run's 3,000.
    assert!(peak.0 < 1500, "at most {} job rows at once", peak.0);
    assert!(peak.1 < 1000, "at most {} tombstones at once", peak.1);

    // What the jobs did is still there: the last 1,000 documents, each with its head.
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM quern_documents), (SELECT count(*) FROM quern_document_heads),
                    (SELECT min(document_id) FROM quern_documents WHERE document_id < 'doc-1000')",
            &[],
        )
        .await
        .unwrap();
    let (documents, heads, deleted_left): (i64, i64, Option<String>) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((documents, heads, deleted_left), (1000, 1000, None));
    stop.cancel();
    worker.await.expect("join").expect("worker");
    harness.cleanup().await;
}

#[test]
fn the_tombstone_retention_follows_the_workers_retry_flags() {
    let config = |extra: &[&str]| {
        let argv = ["quern-worker"].iter().chain(extra).map(std::ffi::OsString::from).collect();
        quern_worker::config_file::load(argv).expect("valid flags").config
    };
    let defaults = config(&[]).retention_policy().expect("policy");
    assert_eq!(defaults, RetentionPolicy::default());
    assert_eq!(config(&[]).prune_every, Duration::from_secs(60));
    let longer = config(&["--max-attempts", "6", "--retry-tiers", "1m,1h"]).retention_policy().expect("policy");
    assert_eq!(longer.tombstone_retention, Duration::from_secs(6 * 21 * 1800 + 60 + 4 * 3600 + 86_400));
    let given = config(&["--tombstone-retention", "2d", "--job-retention", "30d", "--prune-batch-rows", "500"]);
    let given = given.retention_policy().expect("policy");
    assert_eq!(
        (given.tombstone_retention, given.job_retention, given.batch_rows),
        (Duration::from_secs(2 * 86_400), Duration::from_secs(30 * 86_400), 500)
    );
}
