//! Each job's fate in `quern_jobs`: what a web tier reads to learn whether its job made it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Store, StoreError, StoredDocument};

/// A job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Enqueued, not yet picked up (only written by tools that choose to).
    Queued,
    /// A worker is on it (or was, and will be again after a redelivery).
    Running,
    /// Its rows are committed.
    Succeeded,
    /// Its last attempt failed transiently; it will be retried.
    Failed,
    /// It cannot succeed; its message is in the dead-letter queue.
    Dead,
}

impl JobStatus {
    /// The value stored in `quern_jobs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Dead => "dead",
        }
    }

    fn parse(value: &str) -> Option<JobStatus> {
        Some(match value {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "dead" => JobStatus::Dead,
            _ => return None,
        })
    }

    /// True once nothing more will happen to the job without a person (succeeded or dead).
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Dead)
    }
}

/// A row of `quern_jobs`.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// The job.
    pub job_id: Uuid,
    /// Its collection, when known.
    pub collection: Option<String>,
    /// Its document, when known.
    pub document_id: Option<String>,
    /// `upsert` or `delete`, when known.
    pub op: Option<String>,
    /// The queue prefix of the worker that last ran it; `None` for rows of workers older than migration 3.
    pub queue_prefix: Option<String>,
    /// Where it stands.
    pub status: JobStatus,
    /// Attempts started.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Chunks written by the successful attempt.
    pub chunk_count: Option<i32>,
    /// First seen by a worker.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The columns [`job_record`] reads, in its order.
const JOB_COLUMNS: &str =
    "job_id, collection, document_id, op, status, attempts, last_error, chunk_count, created_at, updated_at, queue_prefix";

/// A row selected with [`JOB_COLUMNS`].
fn job_record(row: &tokio_postgres::Row) -> JobRecord {
    JobRecord {
        job_id: row.get(0),
        collection: row.get(1),
        document_id: row.get(2),
        op: row.get(3),
        queue_prefix: row.get(10),
        status: JobStatus::parse(row.get(4)).unwrap_or(JobStatus::Running),
        attempts: row.get(5),
        last_error: row.get(6),
        chunk_count: row.get(7),
        created_at: row.get(8),
        updated_at: row.get(9),
    }
}

/// What [`Store::start_attempt`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStart {
    /// Go ahead; this is attempt number `attempt`.
    Run {
        /// 1 for the first attempt.
        attempt: i32,
        /// What is stored about the job's document, if it exists.
        stored: Option<StoredDocument>,
    },
    /// The job already succeeded (a redelivery after a crash between commit and ack): do nothing, ack.
    AlreadySucceeded,
}

/// Counts of final states among a set of jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinishedCounts {
    /// Jobs whose rows are committed.
    pub succeeded: u64,
    /// Jobs in the dead-letter queue.
    pub dead: u64,
    /// Chunks written by the succeeded jobs.
    pub chunks: u64,
}

impl Store {
    /// Records that an attempt starts, unless the job already succeeded, and reads what is stored about the job's
    /// document (to decide how much of a re-ingest needs new vectors) in the same round trip.
    ///
    /// `queue_prefix` is the topology the worker consumes from, so an overview of one prefix counts its jobs
    /// only; `None` keeps whatever the row had.
    ///
    /// Committed without waiting for the WAL flush (`synchronous_commit` off for this one statement's
    /// transaction): a `running` row lost to a database crash costs nothing, since the job's success is
    /// upserted with its rows and the broker's attempt header, not this count, decides retries. Waiting for a
    /// flush here would cost every job a second commit flush besides its write's.
    pub async fn start_attempt(
        &self,
        job_id: Uuid,
        collection: &str,
        document_id: &str,
        op: &str,
        queue_prefix: Option<&str>,
    ) -> Result<JobStart, StoreError> {
        self.timed("start attempt", async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "WITH started AS (
                         INSERT INTO quern_jobs (job_id, collection, document_id, op, status, attempts, queue_prefix)
                         SELECT $1, $2, $3, $4, 'running', 1, $5
                         FROM (SELECT set_config('synchronous_commit', 'off', true)) AS flush_not_awaited
                         ON CONFLICT (job_id) DO UPDATE SET
                             status = CASE WHEN quern_jobs.status = 'succeeded' THEN 'succeeded' ELSE 'running' END,
                             attempts = quern_jobs.attempts
                                 + CASE WHEN quern_jobs.status = 'succeeded' THEN 0 ELSE 1 END,
                             queue_prefix = coalesce(EXCLUDED.queue_prefix, quern_jobs.queue_prefix),
                             updated_at = now()
                         RETURNING status, attempts
                     )
                     SELECT started.status, started.attempts, doc.content_sha256, doc.embedding_model, doc.chunking
                     FROM started
                     LEFT JOIN quern_documents AS doc ON doc.collection = $2 AND doc.document_id = $3",
                )
                .await
                .map_err(StoreError::db("prepare start attempt"))?;
            let row = client
                .query_one(&statement, &[&job_id, &collection, &document_id, &op, &queue_prefix])
                .await
                .map_err(StoreError::db("start attempt"))?;
            let status: &str = row.get(0);
            if status == "succeeded" {
                return Ok(JobStart::AlreadySucceeded);
            }
            let stored = row.get::<_, Option<String>>(2).map(|content_sha256| StoredDocument {
                content_sha256,
                embedding_model: row.get(3),
                chunking: row.get(4),
            });
            Ok(JobStart::Run { attempt: row.get(1), stored })
        })
        .await
    }

    /// Records a failed attempt: `failed` (will be retried) or `dead` (dead-lettered), with the reason.
    /// `collection` and `document_id` may be unknown for a malformed body; `queue_prefix` is as for
    /// [`Store::start_attempt`] (a malformed body has no attempt row, so this is where its prefix is written).
    pub async fn record_failure(
        &self,
        job_id: Uuid,
        queue_prefix: Option<&str>,
        collection: Option<&str>,
        document_id: Option<&str>,
        status: JobStatus,
        error: &str,
    ) -> Result<(), StoreError> {
        self.timed("record failure", async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO quern_jobs
                         (job_id, collection, document_id, status, attempts, last_error, queue_prefix)
                     VALUES ($1, $2, $3, $4, 1, $5, $6)
                     ON CONFLICT (job_id) DO UPDATE SET status = EXCLUDED.status, last_error = EXCLUDED.last_error,
                         queue_prefix = coalesce(EXCLUDED.queue_prefix, quern_jobs.queue_prefix), updated_at = now()
                     WHERE quern_jobs.status <> 'succeeded'",
                    &[&job_id, &collection, &document_id, &status.as_str(), &error, &queue_prefix],
                )
                .await
                .map_err(StoreError::db("record failure"))?;
            Ok(())
        })
        .await
    }

    /// One job's record, if any worker has seen it.
    pub async fn job(&self, job_id: Uuid) -> Result<Option<JobRecord>, StoreError> {
        self.timed("read job", async {
            let client = self.client().await?;
            let row = client
                .query_opt(&format!("SELECT {JOB_COLUMNS} FROM quern_jobs WHERE job_id = $1"), &[&job_id])
                .await
                .map_err(StoreError::db("read job"))?;
            Ok(row.as_ref().map(job_record))
        })
        .await
    }

    /// The most recently updated jobs (at most `limit`) of `collection`, or of one document of it: what an
    /// operator looks for when someone asks "what happened to my document?". Scans the jobs table, which
    /// retention keeps to its window, rather than make every job write keep one more index.
    pub async fn find_jobs(
        &self,
        collection: &str,
        document_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.timed("find jobs", async {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM quern_jobs
                         WHERE collection = $1 AND ($2::text IS NULL OR document_id = $2)
                         ORDER BY updated_at DESC LIMIT $3"
                    ),
                    &[&collection, &document_id, &limit],
                )
                .await
                .map_err(StoreError::db("find jobs"))?;
            Ok(rows.iter().map(job_record).collect())
        })
        .await
    }

    /// How many of `job_ids` have succeeded or died.
    pub async fn count_finished(&self, job_ids: &[Uuid]) -> Result<FinishedCounts, StoreError> {
        self.timed("count finished jobs", async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'dead'),
                            coalesce(sum(chunk_count) FILTER (WHERE status = 'succeeded'), 0)::int8
                     FROM quern_jobs WHERE job_id = ANY($1)",
                    &[&job_ids],
                )
                .await
                .map_err(StoreError::db("count finished jobs"))?;
            let succeeded: i64 = row.get(0);
            let dead: i64 = row.get(1);
            let chunks: i64 = row.get(2);
            Ok(FinishedCounts { succeeded: succeeded as u64, dead: dead as u64, chunks: chunks as u64 })
        })
        .await
    }
}
