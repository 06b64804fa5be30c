//! Retention against a real Postgres: a filled `quern_jobs` and `quern_document_heads` pruned with a short retention
//! (old finished rows gone; recent, unfinished and live rows kept; the run counted and recorded); batches that skip
//! what a writer holds and never hold writers up; and the stale-job rule once tombstones are gone.

use std::time::Duration;

use chrono::Utc;
use pgvector::Vector;
use quern_core::Job;
use quern_store::{
    ChunkRow, DocumentChange, DocumentCommit, DocumentState, JobVersion, RetentionPolicy, Store, WriteResult,
};
use quern_testkit::{TestDatabase, TEST_DIM};

const HOUR: Duration = Duration::from_secs(3600);

/// Finished jobs and tombstones older than an hour go, in batches of `batch_rows`.
fn hour_policy(batch_rows: u32) -> RetentionPolicy {
    RetentionPolicy { job_retention: HOUR, tombstone_retention: HOUR, batch_rows }
}

/// Inserts `count` jobs in `status`, last changed `ago_secs` ago, for documents `<label>-<i>`.
async fn insert_jobs(client: &tokio_postgres::Client, label: &str, status: &str, ago_secs: f64, count: i32) {
    client
        .execute(
            "INSERT INTO quern_jobs (job_id, collection, document_id, op, status, attempts, created_at, updated_at)
             SELECT gen_random_uuid(), 'docs', $1 || '-' || i, 'upsert', $2, 1,
                    now() - make_interval(secs => $3), now() - make_interval(secs => $3)
             FROM generate_series(1, $4::int4) AS i",
            &[&label, &status, &ago_secs, &count],
        )
        .await
        .expect("insert jobs");
}

/// Inserts `count` heads `<label>-<i>` of versions `ago_secs + i` seconds ago: tombstones if `deleted`, else live
/// documents (with their document row).
async fn insert_heads(client: &tokio_postgres::Client, label: &str, deleted: bool, ago_secs: f64, count: i32) {
    client
        .execute(
            "INSERT INTO quern_document_heads (collection, document_id, version_at, version_job_id, deleted)
             SELECT 'docs', $1 || '-' || i, now() - make_interval(secs => $3::float8 + i), gen_random_uuid(), $2
             FROM generate_series(1, $4::int4) AS i",
            &[&label, &deleted, &ago_secs, &count],
        )
        .await
        .expect("insert heads");
    if !deleted {
        client
            .execute(
                "INSERT INTO quern_documents (collection, document_id, content_sha256, chunk_count, embedding_model)
                 SELECT 'docs', $1 || '-' || i, 'sha', 0, 'test-model' FROM generate_series(1, $2::int4) AS i",
                &[&label, &count],
            )
            .await
            .expect("insert documents");
    }
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

async fn jobs_like(client: &tokio_postgres::Client, label: &str) -> i64 {
    client
        .query_one("SELECT count(*) FROM quern_jobs WHERE document_id LIKE $1 || '-%'", &[&label])
        .await
        .expect("count jobs")
        .get(0)
}

async fn heads_like(client: &tokio_postgres::Client, label: &str) -> i64 {
    client
        .query_one("SELECT count(*) FROM quern_document_heads WHERE document_id LIKE $1 || '-%'", &[&label])
        .await
        .expect("count heads")
        .get(0)
}

#[tokio::test]
async fn a_filled_table_keeps_only_what_retention_keeps_and_the_run_is_recorded() {
    let db = TestDatabase::create(TEST_DIM).await;
    let (store, client) = (db.store(), db.client().await);
    // 4,000 jobs: old and recent ones in every status.
    for status in ["succeeded", "dead", "running", "failed", "queued"] {
        insert_jobs(&client, &format!("old-{status}"), status, 7200.0, 600).await;
        insert_jobs(&client, &format!("new-{status}"), status, 60.0, 200).await;
    }
    insert_heads(&client, "old-tomb", true, 7200.0, 300).await;
    insert_heads(&client, "new-tomb", true, 60.0, 200).await;
    insert_heads(&client, "old-live", false, 7200.0, 300).await;
    let policy = hour_policy(100);

    let preview = store.prune_preview(&policy).await.expect("dry run");
    assert!(preview.dry_run);
    assert_eq!((preview.jobs, preview.tombstones), (1200, 300));
    assert_eq!(count(&client, "SELECT count(*) FROM quern_jobs").await, 4000, "a dry run deletes nothing");
    assert_eq!(store.prune_history().await.unwrap().unwrap().last, None, "nor records anything");

    let report = store.prune(&policy, "test", &|| true).await.expect("prune");
    assert_eq!((report.jobs, report.tombstones), (1200, 300));
    assert!(!report.interrupted);
    for gone in ["old-succeeded", "old-dead", "old-tomb"] {
        assert_eq!(jobs_like(&client, gone).await + heads_like(&client, gone).await, 0, "{gone}");
    }
    for unfinished in ["old-running", "old-failed", "old-queued"] {
        assert_eq!(jobs_like(&client, unfinished).await, 600, "{unfinished} jobs stay however old");
    }
    for status in ["succeeded", "dead", "running", "failed", "queued"] {
        assert_eq!(jobs_like(&client, &format!("new-{status}")).await, 200, "recent {status} jobs stay");
    }
    assert_eq!(heads_like(&client, "new-tomb").await, 200, "recent tombstones stay");
    assert_eq!(heads_like(&client, "old-live").await, 300, "a live document's head stays however old");

    // The watermark is the newest tombstone pruned: `old-tomb-1`, 7,201 s old.
    let through = report.tombstones_pruned_through.expect("watermark");
    let age = (Utc::now() - through).num_seconds();
    assert!((7195..=7210).contains(&age), "watermark {age} s old");

    let history = store.prune_history().await.unwrap().expect("migration 6");
    let last = history.last.expect("recorded");
    assert_eq!((last.pruned_by.as_str(), last.jobs, last.tombstones, last.error), ("test", 1200, 300, None));
    assert_eq!((history.runs_last_day, history.jobs_last_day, history.tombstones_last_day), (1, 1200, 300));
    assert_eq!(history.tombstones_pruned_through, Some(through));

    let again = store.prune(&policy, "test", &|| true).await.expect("prune again");
    assert_eq!((again.jobs, again.tombstones), (0, 0));
    assert_eq!(again.tombstones_pruned_through, Some(through), "the watermark never moves back");
    let history = store.prune_history().await.unwrap().unwrap();
    assert_eq!((history.runs_last_day, history.jobs_last_day), (2, 1200));
    db.drop_database().await;
}

#[tokio::test]
async fn a_run_stops_between_batches_when_asked_and_counts_what_it_did() {
    let db = TestDatabase::create(TEST_DIM).await;
    let (store, client) = (db.store(), db.client().await);
    insert_jobs(&client, "old", "succeeded", 7200.0, 1000).await;
    let batches = std::sync::atomic::AtomicU32::new(0);
    let three_batches = || batches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3;
    let report = store.prune(&hour_policy(100), "test", &three_batches).await.expect("prune");
    assert!(report.interrupted);
    assert_eq!(report.jobs, 300);
    assert_eq!(jobs_like(&client, "old").await, 700);
    let last = store.prune_history().await.unwrap().unwrap().last.unwrap();
    assert_eq!(last.jobs, 300, "an interrupted run is recorded with what it pruned");
    db.drop_database().await;
}

#[tokio::test]
async fn a_prune_skips_what_a_writer_holds_without_waiting() {
    let db = TestDatabase::create(TEST_DIM).await;
    let (store, client) = (db.store(), db.client().await);
    insert_jobs(&client, "old", "succeeded", 7200.0, 500).await;
    insert_heads(&client, "tomb", true, 7200.0, 50).await;
    // A writer mid-transaction: a redelivery updating an old job's row, a write holding one deleted document's
    // lock (as `commit_documents` takes it), another holding a tombstone's row.
    let mut writer = db.client().await;
    let tx = writer.transaction().await.unwrap();
    let redelivery = "UPDATE quern_jobs SET attempts = attempts + 1, updated_at = now() WHERE document_id = 'old-7'";
    tx.execute(redelivery, &[]).await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended('docs' || chr(31) || 'tomb-3', 0))", &[]).await.unwrap();
    tx.execute("SELECT 1 FROM quern_document_heads WHERE document_id = 'tomb-4' FOR UPDATE", &[]).await.unwrap();

    let pruned = tokio::time::timeout(Duration::from_secs(10), store.prune(&hour_policy(50), "test", &|| true))
        .await
        .expect("the prune never waits for the writer")
        .expect("prune");
    assert_eq!((pruned.jobs, pruned.tombstones), (499, 48));
    let left: Vec<String> = client
        .query(
            "SELECT document_id FROM quern_jobs UNION ALL SELECT document_id FROM quern_document_heads ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(left, ["old-7", "tomb-3", "tomb-4"]);

    tx.commit().await.unwrap();
    let rest = store.prune(&hour_policy(50), "test", &|| true).await.expect("prune the rest");
    // old-7 was just changed by its redelivery: it is recent now, and stays.
    assert_eq!((rest.jobs, rest.tombstones), (0, 2));
    db.drop_database().await;
}

fn state(text: &str) -> DocumentState {
    DocumentState {
        content_sha256: quern_core::digest::content_sha256(text),
        embedding_model: "test-model".into(),
        chunking: "chars:1000:200".into(),
        metadata: None,
    }
}

/// A job on `document` whose version is `minutes_ago` before now.
fn commit(document: &str, minutes_ago: i64, change: DocumentChange) -> DocumentCommit {
    let job = Job::upsert("docs", document, "text");
    let at = Utc::now() - chrono::Duration::minutes(minutes_ago);
    DocumentCommit::new(&job, JobVersion { at, job_id: job.job_id }, change)
}

fn upsert(document: &str, minutes_ago: i64) -> DocumentCommit {
    let chunk = ChunkRow {
        content: format!("text of {document}"),
        content_sha256: quern_core::digest::content_sha256(document),
        embedding: Vector::from(vec![1.0; TEST_DIM]),
    };
    commit(document, minutes_ago, DocumentChange::Replace { document: state(document), chunks: vec![chunk] })
}

async fn write(store: &Store, commit: &DocumentCommit) -> WriteResult {
    store.commit_documents(std::slice::from_ref(commit)).await.expect("write")[0]
}

async fn stored(client: &tokio_postgres::Client, document: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM quern_documents WHERE document_id = $1),
                    (SELECT count(*) FROM quern_chunks WHERE document_id = $1)",
            &[&document],
        )
        .await
        .expect("count");
    (row.get(0), row.get(1))
}

async fn job_status(client: &tokio_postgres::Client, commit: &DocumentCommit) -> Option<String> {
    client
        .query_opt("SELECT status FROM quern_jobs WHERE job_id = $1", &[&commit.job_id])
        .await
        .expect("job")
        .map(|row| row.get(0))
}

#[tokio::test]
async fn once_a_tombstone_is_pruned_a_job_older_than_it_cannot_bring_the_document_back() {
    let db = TestDatabase::create(TEST_DIM).await;
    let (store, client) = (db.store(), db.client().await);
    // `gone` was written 3 h ago and deleted 2 h ago; `alive` was written 3 h ago and stays.
    assert_eq!(write(&store, &upsert("gone", 180)).await, WriteResult::Applied);
    assert_eq!(write(&store, &commit("gone", 120, DocumentChange::Delete)).await, WriteResult::Applied);
    assert_eq!(write(&store, &upsert("alive", 180)).await, WriteResult::Applied);

    // Before pruning, the tombstone orders a late job as usual.
    assert_eq!(write(&store, &upsert("gone", 150)).await, WriteResult::Superseded);
    let report = store.prune(&hour_policy(1000), "test", &|| true).await.expect("prune");
    assert_eq!(report.tombstones, 1);
    assert_eq!(count(&client, "SELECT count(*) FROM quern_document_heads WHERE document_id = 'gone'").await, 0);

    // A job older than the forgotten delete: refused as stale, nothing written, not recorded as succeeded.
    let late = upsert("gone", 150);
    assert_eq!(write(&store, &late).await, WriteResult::Stale);
    assert_eq!(stored(&client, "gone").await, (0, 0), "the deleted document stays deleted");
    assert_eq!(job_status(&client, &late).await, None);
    assert_eq!(count(&client, "SELECT count(*) FROM quern_document_heads WHERE document_id = 'gone'").await, 0);
    // A late delete finds the document absent, as it asks: it succeeds and leaves no tombstone of its old version
    // (which would let the late upsert above in).
    let late_delete = commit("gone", 170, DocumentChange::Delete);
    assert_eq!(write(&store, &late_delete).await, WriteResult::Superseded);
    assert_eq!(job_status(&client, &late_delete).await.as_deref(), Some("succeeded"));
    assert_eq!(write(&store, &upsert("gone", 150)).await, WriteResult::Stale);

    // A document with a head is ordered by it, however old the job.
    assert_eq!(write(&store, &upsert("alive", 240)).await, WriteResult::Superseded);
    assert_eq!(write(&store, &upsert("alive", 170)).await, WriteResult::Applied);
    // A job newer than every pruned tombstone writes, for a new document or the deleted one.
    assert_eq!(write(&store, &upsert("new", 90)).await, WriteResult::Applied);
    assert_eq!(write(&store, &upsert("gone", 90)).await, WriteResult::Applied);
    assert_eq!(stored(&client, "gone").await, (1, 1));
    // The price of the rule: the first write of a new document by a job that old is refused too.
    assert_eq!(write(&store, &upsert("first", 150)).await, WriteResult::Stale);

    // In a group, a stale write fails alone.
    let group = [upsert("first", 150), upsert("second", 10)];
    let results = store.commit_documents(&group).await.expect("group");
    assert_eq!(results, [WriteResult::Stale, WriteResult::Applied]);
    assert_eq!(job_status(&client, &group[1]).await.as_deref(), Some("succeeded"));
    assert_eq!(job_status(&client, &group[0]).await, None);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_job_waiting_on_a_prune_batch_sees_the_watermark_it_moved() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    assert_eq!(write(&store, &upsert("gone", 180)).await, WriteResult::Applied);
    let delete = commit("gone", 120, DocumentChange::Delete);
    assert_eq!(write(&store, &delete).await, WriteResult::Applied);
    // A prune batch as `Store::prune` runs it, stopped before its commit: the document's lock taken, its tombstone
    // deleted, the watermark moved.
    let mut pruner = db.client().await;
    let batch = pruner.transaction().await.unwrap();
    batch.execute("SELECT pg_advisory_xact_lock(hashtextextended('docs' || chr(31) || 'gone', 0))", &[]).await.unwrap();
    batch.execute("DELETE FROM quern_document_heads WHERE document_id = 'gone'", &[]).await.unwrap();
    batch.execute("UPDATE quern_prune_state SET tombstones_pruned_through = $1", &[&delete.version.at]).await.unwrap();
    // A job older than the delete, written meanwhile, waits for the document's lock...
    let late = {
        let store = store.clone();
        tokio::spawn(async move { write(&store, &upsert("gone", 150)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!late.is_finished(), "the write waits for the batch");
    batch.commit().await.unwrap();
    // ...then finds the tombstone gone and the watermark moved, both: it is refused, not applied.
    assert_eq!(late.await.unwrap(), WriteResult::Stale);
    assert_eq!(stored(&db.client().await, "gone").await, (0, 0));
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_carry_on_while_a_large_prune_runs() {
    let db = TestDatabase::create(TEST_DIM).await;
    let (store, client) = (db.store(), db.client().await);
    insert_jobs(&client, "old", "succeeded", 7200.0, 5_000).await;
    insert_heads(&client, "doc", true, 7200.0, 20_000).await;
    let prune = {
        let store = store.clone();
        tokio::spawn(async move { store.prune(&hour_policy(50), "test", &|| true).await })
    };
    // Meanwhile writers re-create deleted documents (new versions), late jobs older than the deletes try to bring
    // others back, and redeliveries touch the jobs being pruned, each refusing to wait more than 2 s for a lock.
    let mut writer = db.client().await;
    writer.batch_execute("SET lock_timeout = '2s'").await.unwrap();
    let (mut written, mut during_prune) = (0, 0);
    let mut slowest = Duration::ZERO;
    for i in 1..=200 {
        let started = std::time::Instant::now();
        let result = write(&store, &upsert(&format!("doc-{}", i * 100), 0)).await;
        assert_eq!(result, WriteResult::Applied, "a new version is never stale, whether its tombstone is there or not");
        let late = write(&store, &upsert(&format!("doc-{}", i * 100 - 50), 600)).await;
        assert_ne!(late, WriteResult::Applied, "a job older than the delete: superseded by its tombstone, or stale");
        let tx = writer.transaction().await.unwrap();
        tx.execute(
            "UPDATE quern_jobs SET attempts = attempts + 1, updated_at = now() WHERE document_id = $1",
            &[&format!("old-{}", i * 25)],
        )
        .await
        .expect("a redelivery is not held up by the prune");
        tx.commit().await.unwrap();
        slowest = slowest.max(started.elapsed());
        written += 1;
        during_prune += usize::from(!prune.is_finished());
    }
    let report = prune.await.unwrap().expect("prune");
    assert_eq!(written, 200);
    assert!(during_prune > 10, "only {during_prune} writes while the prune ran");
    assert!(slowest < Duration::from_secs(2), "slowest write {slowest:?}");
    // Each redelivered job is recent now, whether the prune got to it first (then its update found no row) or not.
    let kept = jobs_like(&client, "old").await;
    assert_eq!(report.jobs + kept as u64, 5_000);
    assert!(kept <= 200);
    // Every tombstone went, but those of documents re-created before the prune reached them (a document re-created
    // after its tombstone went counts as pruned and as live).
    assert_eq!(count(&client, "SELECT count(*) FROM quern_document_heads WHERE deleted").await, 0);
    assert_eq!(count(&client, "SELECT count(*) FROM quern_document_heads").await, 200);
    assert!((19_800..=20_000).contains(&report.tombstones), "{report:?}");
    assert_eq!(stored(&client, "doc-100").await, (1, 1));
    assert_eq!(count(&client, "SELECT count(*) FROM quern_documents").await, 200, "no late job brought one back");
    db.drop_database().await;
}
