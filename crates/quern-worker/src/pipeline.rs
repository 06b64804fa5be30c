//! One message body in, one outcome out: decode, chunk, embed, commit. No broker types here, so tests can
//! drive the whole job path without a consumer or sleeps.

use pgvector::Vector;
use quern_core::digest::content_sha256;
use quern_core::{Chunker, ErrorClass, Job, JobOp, Outcome};
use quern_embed::{EmbedError, EmbeddingPool};
use quern_store::{ChunkRow, JobStart, JobStatus, Store, StoreError};
use tracing::Instrument;

/// Everything a job needs, shared by every job of the process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pipeline {
    chunker: std::sync::Arc<Chunker>,
    embedder: EmbeddingPool,
    store: Store,
}

/// Why a job failed, with its class and a short machine-readable reason.
#[derive(Debug)]
enum JobFailure {
    Embed(EmbedError),
    Store(StoreError),
}

impl JobFailure {
    fn class(&self) -> ErrorClass {
        match self {
            JobFailure::Embed(e) => e.class(),
            JobFailure::Store(e) => e.class(),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            JobFailure::Embed(e) => e.reason(),
            JobFailure::Store(_) => "database",
        }
    }

    fn detail(&self) -> String {
        match self {
            JobFailure::Embed(e) => e.to_string(),
            JobFailure::Store(e) => e.to_string(),
        }
    }
}

impl Pipeline {
    /// Assembles a pipeline from its parts.
    pub fn new(chunker: Chunker, embedder: EmbeddingPool, store: Store) -> Pipeline {
        Pipeline { chunker: std::sync::Arc::new(chunker), embedder, store }
    }

    /// The store the pipeline writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Processes one message body to its outcome. Never panics on bad input; records the job's fate in
    /// `quern_jobs` (best effort for failures: the broker outcome is what keeps the job safe).
    pub async fn process_delivery(&self, body: &[u8]) -> Outcome {
        let job = match Job::decode(body) {
            Ok(job) => job,
            Err(rejected) => {
                let detail = rejected.error.to_string();
                tracing::warn!(job_id = ?rejected.job_id, reason = %detail, "rejecting malformed job");
                if let Some(job_id) = rejected.job_id {
                    self.record(job_id, None, JobStatus::Dead, &detail).await;
                }
                return Outcome::DeadLetter { reason: "contract".into(), detail };
            }
        };
        let span = tracing::info_span!("job", job_id = %job.job_id, collection = %job.collection, document_id = %job.document_id, attempt = tracing::field::Empty);
        self.process_job(&job).instrument(span).await
    }

    async fn process_job(&self, job: &Job) -> Outcome {
        match self.store.start_attempt(job.job_id, &job.collection, &job.document_id, job.op.as_str()).await {
            Ok(JobStart::AlreadySucceeded) => {
                tracing::info!("job already succeeded (redelivery); acknowledging");
                return Outcome::Ack;
            }
            Ok(JobStart::Run { attempt }) => {
                tracing::Span::current().record("attempt", attempt);
            }
            Err(error) => return self.fail(job, JobFailure::Store(error)).await,
        }
        let result = match job.op {
            JobOp::Delete => self.store.commit_delete(job).await.map_err(JobFailure::Store).map(|()| 0),
            JobOp::Upsert => self.upsert(job).await,
        };
        match result {
            Ok(chunks) => {
                tracing::info!(chunks, op = job.op.as_str(), "job succeeded");
                Outcome::Ack
            }
            Err(failure) => self.fail(job, failure).await,
        }
    }

    async fn upsert(&self, job: &Job) -> Result<usize, JobFailure> {
        let chunks = self.chunker.split(&job.text);
        let vectors = if chunks.is_empty() {
            Vec::new()
        } else {
            self.embedder.embed_all(&chunks).await.map_err(JobFailure::Embed)?
        };
        let rows: Vec<ChunkRow> = chunks
            .iter()
            .zip(vectors)
            .map(|(content, embedding)| ChunkRow {
                content: (*content).to_owned(),
                content_sha256: content_sha256(content),
                embedding: Vector::from(embedding),
            })
            .collect();
        let model = self.embedder.client().model();
        self.store.commit_upsert(job, &content_sha256(&job.text), model, &rows).await.map_err(JobFailure::Store)?;
        Ok(rows.len())
    }

    async fn fail(&self, job: &Job, failure: JobFailure) -> Outcome {
        let detail = failure.detail();
        match failure.class() {
            ErrorClass::Transient => {
                tracing::warn!(error = %detail, "job failed transiently; it will be retried");
                self.record(job.job_id, Some(job), JobStatus::Failed, &detail).await;
                Outcome::Retry { reason: detail }
            }
            ErrorClass::Permanent => {
                tracing::error!(error = %detail, "job failed permanently; dead-lettering");
                self.record(job.job_id, Some(job), JobStatus::Dead, &detail).await;
                Outcome::DeadLetter { reason: failure.reason().into(), detail }
            }
        }
    }

    async fn record(&self, job_id: uuid::Uuid, job: Option<&Job>, status: JobStatus, error: &str) {
        let collection = job.map(|j| j.collection.as_str());
        let document_id = job.map(|j| j.document_id.as_str());
        if let Err(store_error) = self.store.record_failure(job_id, collection, document_id, status, error).await {
            tracing::warn!(%job_id, error = %store_error, "could not record the job's failure");
        }
    }
}
