//! Group commit against a real Postgres with pgvector: several jobs' writes in one transaction, each with its
//! own outcome, the per-document ordering kept, and a failing write failing alone.

use chrono::{Duration, Utc};
use pgvector::Vector;
use quern_core::Job;
use quern_store::{
    ChunkRow, DocumentChange, DocumentCommit, DocumentState, GroupCommitConfig, GroupCommitter, JobVersion, WriteResult,
};
use quern_testkit::{TestDatabase, TEST_DIM};

fn state(text: &str) -> DocumentState {
    DocumentState {
        content_sha256: quern_core::digest::content_sha256(text),
        embedding_model: "test-model".into(),
        chunking: "chars:1000:200".into(),
        metadata: None,
    }
}

fn chunks(n: usize, dim: usize) -> Vec<ChunkRow> {
    (0..n)
        .map(|i| ChunkRow {
            content: format!("chunk {i}"),
            content_sha256: quern_core::digest::content_sha256(&format!("chunk {i}")),
            embedding: Vector::from(vec![i as f32 + 1.0; dim]),
        })
        .collect()
}

/// A job on `document` whose version is `seconds_ago` before now.
fn commit(document: &str, seconds_ago: i64, change: DocumentChange) -> DocumentCommit {
    let job = Job::upsert("docs", document, "text");
    let version = JobVersion { at: Utc::now() - Duration::seconds(seconds_ago), job_id: job.job_id };
    DocumentCommit::new(&job, version, change)
}

fn replace(document: &str, seconds_ago: i64, n: usize) -> DocumentCommit {
    commit(document, seconds_ago, DocumentChange::Replace { document: state(document), chunks: chunks(n, TEST_DIM) })
}

async fn chunk_count(client: &tokio_postgres::Client, document: &str) -> i64 {
    client
        .query_one("SELECT count(*) FROM quern_chunks WHERE document_id = $1", &[&document])
        .await
        .expect("count chunks")
        .get(0)
}

async fn job_chunk_count(client: &tokio_postgres::Client, commit: &DocumentCommit) -> (String, Option<i32>) {
    let row = client
        .query_one("SELECT status, chunk_count FROM quern_jobs WHERE job_id = $1", &[&commit.job_id])
        .await
        .expect("job row");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn one_transaction_gives_each_write_its_own_outcome() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    // Before: b and c exist; d was written by a job newer than the one in the group.
    let before = [replace("b", 60, 2), replace("c", 60, 2), replace("d", 1, 4)];
    assert_eq!(store.commit_documents(&before).await.unwrap(), vec![WriteResult::Applied; 3]);

    let group = [
        replace("a", 10, 3),
        commit("b", 10, DocumentChange::Keep { document: state("b"), chunk_count: 2 }),
        commit("c", 10, DocumentChange::Delete),
        replace("d", 10, 1),
    ];
    let results = store.commit_documents(&group).await.unwrap();
    assert_eq!(
        results,
        vec![WriteResult::Applied, WriteResult::Applied, WriteResult::Applied, WriteResult::Superseded]
    );

    let client = db.client().await;
    assert_eq!(chunk_count(&client, "a").await, 3);
    assert_eq!(chunk_count(&client, "b").await, 2, "a kept document keeps its chunks");
    assert_eq!(chunk_count(&client, "c").await, 0);
    assert_eq!(chunk_count(&client, "d").await, 4, "the newer job's chunks stay");
    let documents: Vec<String> = client
        .query("SELECT document_id FROM quern_documents ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(documents, ["a", "b", "d"]);
    let b_job: uuid::Uuid =
        client.query_one("SELECT last_job_id FROM quern_documents WHERE document_id = 'b'", &[]).await.unwrap().get(0);
    assert_eq!(b_job, group[1].job_id, "a kept document's facts move on to the new job");
    let expected = [Some(3), Some(2), Some(0), None];
    for (commit, count) in group.iter().zip(expected) {
        assert_eq!(job_chunk_count(&client, commit).await, ("succeeded".to_owned(), count));
    }
    let deleted: bool =
        client.query_one("SELECT deleted FROM quern_document_heads WHERE document_id = 'c'", &[]).await.unwrap().get(0);
    assert!(deleted, "a delete leaves a tombstone");
    let transactions: i64 = client
        .query_one(
            "SELECT count(DISTINCT xmin::text) FROM quern_jobs WHERE job_id = ANY($1)",
            &[&group.iter().map(|c| c.job_id).collect::<Vec<_>>()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(transactions, 1);
    db.drop_database().await;
}

#[tokio::test]
async fn two_writes_to_one_document_are_refused_in_one_transaction() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    let error = store.commit_documents(&[replace("a", 10, 1), replace("a", 5, 2)]).await.unwrap_err();
    assert!(error.to_string().contains("two writes to document docs/a"), "{error}");
    assert_eq!(chunk_count(&db.client().await, "a").await, 0);
    db.drop_database().await;
}

#[tokio::test]
async fn concurrent_writes_share_transactions_and_each_is_answered_after_its_commit() {
    let db = TestDatabase::create(TEST_DIM).await;
    let committer = GroupCommitter::new(db.store(), GroupCommitConfig { concurrency: 1, ..Default::default() });
    // Two writes to one document among them: they must go in different transactions, the later version winning.
    let mut commits: Vec<DocumentCommit> = (0..40).map(|i| replace(&format!("doc-{i}"), 10, 2)).collect();
    commits.push(replace("doc-0", 5, 5));
    let results = futures::future::join_all(commits.iter().map(|commit| committer.commit(commit.clone()))).await;
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|r| *r == WriteResult::Applied)), "{results:?}");

    let client = db.client().await;
    assert_eq!(chunk_count(&client, "doc-0").await, 5, "the later write to doc-0 wins");
    assert_eq!(chunk_count(&client, "doc-39").await, 2);
    let ids: Vec<uuid::Uuid> = commits.iter().map(|c| c.job_id).collect();
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT xmin::text) FROM quern_jobs WHERE job_id = ANY($1) AND status = 'succeeded'",
            &[&ids],
        )
        .await
        .unwrap();
    let (succeeded, transactions): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(succeeded, 41);
    assert!((2..=4).contains(&transactions), "41 writes took {transactions} transactions");
    // Every job's row and its chunks were committed together.
    let torn: i64 = client
        .query_one(
            "SELECT count(*) FROM quern_chunks c JOIN quern_documents d USING (collection, document_id)
             JOIN quern_jobs j ON j.job_id = d.last_job_id WHERE c.xmin::text <> j.xmin::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(torn, 0);
    db.drop_database().await;
}

#[tokio::test]
async fn a_write_that_fails_fails_alone() {
    let db = TestDatabase::create(TEST_DIM).await;
    let committer = GroupCommitter::new(db.store(), GroupCommitConfig { concurrency: 1, ..Default::default() });
    let wrong_dimension =
        commit("bad", 10, DocumentChange::Replace { document: state("bad"), chunks: chunks(1, TEST_DIM + 1) });
    let commits = [replace("good-1", 10, 2), wrong_dimension, replace("good-2", 10, 3)];
    let results = futures::future::join_all(commits.iter().map(|c| committer.commit(c.clone()))).await;
    assert_eq!(results[0].as_ref().ok(), Some(&WriteResult::Applied));
    assert!(results[1].as_ref().is_err_and(|e| e.to_string().contains("dimensions")), "{:?}", results[1]);
    assert_eq!(results[2].as_ref().ok(), Some(&WriteResult::Applied));
    let client = db.client().await;
    assert_eq!(chunk_count(&client, "good-1").await, 2);
    assert_eq!(chunk_count(&client, "good-2").await, 3);
    assert_eq!(chunk_count(&client, "bad").await, 0);
    db.drop_database().await;
}

#[tokio::test]
async fn a_group_stays_within_its_row_limit() {
    let db = TestDatabase::create(TEST_DIM).await;
    let config = GroupCommitConfig { concurrency: 1, max_jobs: 64, max_rows: 10 };
    let committer = GroupCommitter::new(db.store(), config);
    // 12 writes of 4 rows: at most 2 per transaction, and a write larger than the limit still goes alone.
    let mut commits: Vec<DocumentCommit> = (0..12).map(|i| replace(&format!("doc-{i}"), 10, 4)).collect();
    commits.push(replace("large", 10, 25));
    let results = futures::future::join_all(commits.iter().map(|c| committer.commit(c.clone()))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let client = db.client().await;
    let largest: i64 = client
        .query_one(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM quern_chunks GROUP BY xmin::text) AS per_transaction",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(largest, 25, "the large write alone; others at most 8 rows per transaction");
    let small_max: i64 = client
        .query_one(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM quern_chunks WHERE document_id <> 'large'
                                 GROUP BY xmin::text) AS per_transaction",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(small_max <= 8, "{small_max} rows in one transaction");
    db.drop_database().await;
}

#[tokio::test]
async fn a_transient_failure_fails_the_whole_group_for_a_later_retry() {
    let db = TestDatabase::create(TEST_DIM).await;
    let mut config = quern_store::StoreConfig::new(db.url.clone());
    config.statement_timeout = std::time::Duration::from_millis(300);
    let store = quern_store::Store::connect(&config).unwrap();
    let committer = GroupCommitter::new(store, GroupCommitConfig { concurrency: 1, ..Default::default() });
    // Another session holds doc-1's lock: the group's lock statement times out (SQLSTATE 57014, transient).
    let holder = db.client().await;
    holder.execute("SELECT pg_advisory_lock(hashtextextended('docs' || chr(31) || 'doc-1', 0))", &[]).await.unwrap();
    let commits = [replace("doc-0", 10, 1), replace("doc-1", 10, 1), replace("doc-2", 10, 1)];
    let results = futures::future::join_all(commits.iter().map(|c| committer.commit(c.clone()))).await;
    for result in &results {
        let error = result.as_ref().expect_err("the whole group fails");
        assert_eq!(error.class(), quern_core::ErrorClass::Transient, "{error}");
        assert!(error.to_string().contains("shared by 3 jobs"), "{error}");
    }
    // Not committed one by one behind the failure: nothing was written.
    let written: i64 = holder.query_one("SELECT count(*) FROM quern_chunks", &[]).await.unwrap().get(0);
    assert_eq!(written, 0);
    db.drop_database().await;
}
