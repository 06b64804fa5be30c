//! One message in, one outcome out: check limits, decode (a Quern job, or a Celery task mapped to one), chunk,
//! embed, commit. No broker types here, so tests drive the whole job path without a consumer or sleeps.
//! Retry-or-dead is decided here too, from the message's failed-attempt count and the retry policy, so the
//! consumer only carries the decision out (for a job that panicked too: [`Pipeline::outcome_of_panic`]). A job
//! whose chunks the embedding provider would not take because it refuses every request (a revoked key, an
//! unknown model, nobody answering) is given back without using up an attempt: the fault is not the job's. So is
//! a job that met a fault inside the worker itself (`StoreError::Internal`, `EmbedError::Internal`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pgvector::Vector;
use quern_core::digest::content_sha256;
use quern_core::{
    metric_names, Chunker, ErrorClass, Failure, Job, JobOp, LimitExceeded, Limits, Outcome, RetryDecision, RetryPolicy,
    TraceParent,
};
use quern_embed::{Blame, EmbedError, EmbeddingPool};
use quern_store::{
    ChunkRow, DocumentChange, DocumentCommit, DocumentState, GroupCommitConfig, GroupCommitter, JobStart, JobStatus,
    JobVersion, Store, StoreError, StoredDocument, WriteResult,
};
use tracing::Instrument;

use crate::celery::{self, CeleryMessage, CeleryTasks, Refused};

/// Everything a job needs, shared by every job of the process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pipeline {
    chunker: std::sync::Arc<Chunker>,
    embedder: EmbeddingPool,
    store: Store,
    /// Where document writes go: they share transactions with other jobs' writes.
    committer: GroupCommitter,
    limits: Limits,
    retry: RetryPolicy,
    /// How documents are cut, stored with each so a change of settings re-embeds.
    chunking: String,
    /// The topology prefix this worker consumes from, recorded on each job row so `quern status` can count the
    /// jobs of one prefix; `None` (a pipeline nobody told) records none.
    queue_prefix: Option<std::sync::Arc<str>>,
    /// The Celery tasks taken as jobs (none unless `--celery-task` is given).
    celery: std::sync::Arc<CeleryTasks>,
}

/// Why an attempt failed.
#[derive(Debug)]
enum JobFailure {
    Embed(EmbedError),
    Store(StoreError),
    Limit(LimitExceeded),
}

impl JobFailure {
    fn class(&self) -> ErrorClass {
        match self {
            JobFailure::Embed(e) => e.class(),
            JobFailure::Store(e) => e.class(),
            JobFailure::Limit(_) => ErrorClass::Permanent,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            JobFailure::Embed(e) => e.reason(),
            JobFailure::Store(e) if e.is_internal() => "database_internal",
            JobFailure::Store(_) => "database",
            JobFailure::Limit(e) => e.reason(),
        }
    }

    /// Throttling is the provider pacing us, not the job failing: it does not use up an attempt.
    fn counts_as_attempt(&self) -> bool {
        !matches!(self, JobFailure::Embed(EmbedError::Status { status: 429, .. }))
    }

    /// The embedding provider refuses every request: no job is at fault, and none should fail for it.
    fn is_the_providers(&self) -> bool {
        matches!(self, JobFailure::Embed(error) if error.blame() == Blame::Provider)
    }

    /// A fault inside this worker (a stopped background task, a broken invariant): no job is at fault either.
    fn is_the_workers(&self) -> bool {
        match self {
            JobFailure::Embed(e) => e.is_internal(),
            JobFailure::Store(e) => e.is_internal(),
            JobFailure::Limit(_) => false,
        }
    }

    /// The outcome of this failure after `failed_attempts` earlier ones. A failure that is not the job's (the
    /// provider refuses every request, or a fault inside this worker) gives the job back with its attempts
    /// unchanged, so it never dead-letters a job; throttling retries without using up an attempt; other transient
    /// failures retry until `retry` gives up; permanent ones dead-letter at once.
    fn outcome(self, failed_attempts: u32, retry: &RetryPolicy) -> Outcome {
        if self.is_the_providers() || self.is_the_workers() {
            let reason = self.reason().to_owned();
            let failure = Failure { class: ErrorClass::Transient, reason, detail: self.into_failure().detail };
            let after = retry.delay_tiers.first().copied().unwrap_or(std::time::Duration::from_secs(1));
            return Outcome::GiveBack { after, failed_attempts, failure };
        }
        let failed_attempts = if self.counts_as_attempt() { failed_attempts + 1 } else { failed_attempts };
        let failure = self.into_failure();
        let decision = match failure.class {
            ErrorClass::Transient => retry.decide(failed_attempts),
            ErrorClass::Permanent => RetryDecision::GiveUp,
        };
        match decision {
            RetryDecision::RetryAfter(after) => Outcome::Retry { after, failed_attempts, failure },
            RetryDecision::GiveUp => Outcome::DeadLetter { failed_attempts, failure },
        }
    }

    fn into_failure(self) -> Failure {
        let (class, reason) = (self.class(), self.reason().to_owned());
        let detail = match self {
            JobFailure::Embed(e) => e.to_string(),
            JobFailure::Store(e) => e.to_string(),
            JobFailure::Limit(e) => e.to_string(),
        };
        Failure { class, reason, detail }
    }
}

impl Pipeline {
    /// Assembles a pipeline from its parts.
    pub fn new(
        chunker: Chunker,
        embedder: EmbeddingPool,
        store: Store,
        limits: Limits,
        retry: RetryPolicy,
        writes: GroupCommitConfig,
    ) -> Pipeline {
        let chunking = format!("chars:{}:{}", chunker.max_chars(), chunker.overlap_chars());
        let committer = GroupCommitter::new(store.clone(), writes);
        Pipeline {
            chunker: std::sync::Arc::new(chunker),
            embedder,
            store,
            committer,
            limits,
            retry,
            chunking,
            queue_prefix: None,
            celery: std::sync::Arc::default(),
        }
    }

    /// Records `prefix`, the topology prefix the jobs are consumed from, on each job's row.
    pub fn with_queue_prefix(mut self, prefix: &str) -> Pipeline {
        self.queue_prefix = Some(prefix.into());
        self
    }

    /// Takes the Celery task messages of `tasks` as jobs.
    pub fn with_celery_tasks(mut self, tasks: CeleryTasks) -> Pipeline {
        self.celery = std::sync::Arc::new(tasks);
        self
    }

    /// The store the pipeline writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The embedding pool: the consumer follows its provider's availability.
    pub fn embedder(&self) -> &EmbeddingPool {
        &self.embedder
    }

    /// The outcome of a message whose processing panicked (the consumer catches the panic and passes its
    /// message): dead, as a permanent failure, recorded as such in `quern_jobs` when the body names a job. The
    /// consumer only carries it out, as it does every other outcome.
    pub async fn outcome_of_panic(
        &self,
        body: &[u8],
        properties: &CeleryMessage,
        failed_attempts: u32,
        panic_message: &str,
    ) -> Outcome {
        let detail = format!("the job panicked: {panic_message}");
        tracing::error!(%detail, "job panicked; the worker carries on");
        if let Ok(job) = self.decode(body, properties) {
            self.record(job.job_id, Some(&job), JobStatus::Dead, &detail).await;
        }
        let failure = Failure { class: ErrorClass::Permanent, reason: "panic".into(), detail };
        Outcome::DeadLetter { failed_attempts: failed_attempts + 1, failure }
    }

    /// The job a message asks for: a Quern job, or a Celery task (protocol 2 names it in a header, protocol 1 in
    /// its body) mapped to one by `--celery-task`; or why it is neither.
    fn decode(&self, body: &[u8], properties: &CeleryMessage) -> Result<Job, Refused> {
        if properties.is_protocol_2() {
            return self.celery.translate(properties, body, Utc::now());
        }
        Job::decode(body).or_else(|rejected| match celery::protocol_1_task(body) {
            Some(_) => self.celery.translate(properties, body, Utc::now()),
            None => Err(Refused { job_id: rejected.job_id, reason: "contract", detail: rejected.error.to_string() }),
        })
    }

    /// Processes one message body, which has already failed `failed_attempts` times, to its outcome.
    /// Never panics on bad input; records the job's fate in `quern_jobs` (best effort for failures: the
    /// broker outcome is what keeps the job safe).
    pub async fn process_delivery(&self, body: &[u8], failed_attempts: u32) -> Outcome {
        self.process_traced(body, &CeleryMessage::default(), failed_attempts, None).await
    }

    /// [`Pipeline::process_delivery`] of a message with its `properties` (which tell a Celery task message),
    /// continuing the producer's trace (a new one when the message has none): the job's span, and so every log
    /// line of the job, carries the trace id.
    pub async fn process_traced(
        &self,
        body: &[u8],
        properties: &CeleryMessage,
        failed_attempts: u32,
        trace: Option<TraceParent>,
    ) -> Outcome {
        if let Err(limit) = self.limits.check_message(body.len()) {
            let job_id = peek_job_id_bounded(body);
            return self.reject(job_id, limit.reason(), limit.to_string(), failed_attempts).await;
        }
        let job = match self.decode(body, properties) {
            Ok(job) => job,
            Err(refused) => return self.reject(refused.job_id, refused.reason, refused.detail, failed_attempts).await,
        };
        let trace = trace.unwrap_or_else(TraceParent::new_root);
        let span = tracing::info_span!(
            "job",
            job_id = %job.job_id,
            collection = %job.collection,
            document_id = %job.document_id,
            attempt = failed_attempts + 1,
            trace_id = %trace.trace_id_hex(),
            parent_span_id = %trace.parent_id_hex(),
        );
        crate::telemetry::continue_trace(&span, &trace);
        self.process_job(&job, failed_attempts).instrument(span).await
    }

    /// A body that is not a job it can run: dead on the first delivery.
    async fn reject(&self, job_id: Option<uuid::Uuid>, reason: &str, detail: String, failed_attempts: u32) -> Outcome {
        tracing::warn!(?job_id, %reason, %detail, "rejecting message");
        if let Some(job_id) = job_id {
            self.record(job_id, None, JobStatus::Dead, &detail).await;
        }
        let failure = Failure { class: ErrorClass::Permanent, reason: reason.to_owned(), detail };
        Outcome::DeadLetter { failed_attempts: failed_attempts + 1, failure }
    }

    async fn process_job(&self, job: &Job, failed_attempts: u32) -> Outcome {
        let prefix = self.queue_prefix.as_deref();
        let started = self.store.start_attempt(job.job_id, &job.collection, &job.document_id, job.op.as_str(), prefix);
        let stored = match started.await {
            Ok(JobStart::AlreadySucceeded) => {
                tracing::info!("job already succeeded (redelivery); acknowledging");
                return Outcome::Ack;
            }
            Ok(JobStart::Run { stored, .. }) => stored,
            Err(error) => return self.fail(job, JobFailure::Store(error), failed_attempts).await,
        };
        let version = job_version(job);
        let result = match job.op {
            JobOp::Delete => {
                let commit = DocumentCommit::new(job, version, DocumentChange::Delete);
                timed_write("delete", self.committer.commit(commit)).await.map(|r| (r, 0))
            }
            JobOp::Upsert => self.upsert(job, version, stored).await,
        };
        match result {
            Ok((WriteResult::Stale, _)) => self.refuse_stale(job, version, failed_attempts).await,
            Ok((written, chunks)) => {
                match written {
                    WriteResult::Applied => tracing::info!(chunks, op = job.op.as_str(), "job succeeded"),
                    WriteResult::Superseded | WriteResult::Stale => {
                        tracing::info!(
                            op = job.op.as_str(),
                            "a later job already wrote this document; nothing to change"
                        )
                    }
                }
                metrics::counter!(metric_names::JOBS_SUCCEEDED).increment(1);
                if let Some(created_ms) = job.created_at_ms() {
                    let waited = Utc::now().timestamp_millis() - created_ms as i64;
                    let seconds = waited.max(0) as f64 / 1000.0;
                    metrics::histogram!(metric_names::JOB_DURATION_SECONDS, "span" => "enqueue_to_commit")
                        .record(seconds);
                }
                Outcome::Ack
            }
            Err(failure) => self.fail(job, failure, failed_attempts).await,
        }
    }

    /// A job older than the tombstones pruned so far, for a document with no version: it could bring back a
    /// document deleted after it (see `quern_store::retention`), so it goes to the dead-letter queue, changing
    /// nothing. Enqueueing the document again (a new job) writes it.
    async fn refuse_stale(&self, job: &Job, version: JobVersion, failed_attempts: u32) -> Outcome {
        let detail = format!(
            "stale job: created {} (from its job id), before the newest tombstone pruned by retention, for a \
             document with no version: it could bring back a deleted document; enqueue the document again as a \
             new job to write it",
            version.at.to_rfc3339()
        );
        tracing::warn!(%detail, "refusing a stale job; dead-lettering");
        self.record(job.job_id, Some(job), JobStatus::Dead, &detail).await;
        let failure = Failure { class: ErrorClass::Permanent, reason: "stale".to_owned(), detail };
        Outcome::DeadLetter { failed_attempts: failed_attempts + 1, failure }
    }

    async fn upsert(
        &self,
        job: &Job,
        version: JobVersion,
        stored: Option<StoredDocument>,
    ) -> Result<(WriteResult, usize), JobFailure> {
        #[cfg(feature = "fault-injection")]
        {
            if job.text.contains("QUERN_FAULT_PANIC") {
                panic!("fault injection: QUERN_FAULT_PANIC in document {}", job.document_id);
            }
            if job.text.contains("QUERN_FAULT_ABORT") {
                std::process::abort();
            }
        }
        self.limits.check_document(&job.text).map_err(JobFailure::Limit)?;
        let chunks = self.chunker.split(&job.text);
        self.limits.check_chunks(chunks.len()).map_err(JobFailure::Limit)?;
        let document_sha = content_sha256(&job.text);
        let model = self.embedder.client().model();
        if stored.as_ref().is_some_and(|s| {
            s.content_sha256 == document_sha && s.embedding_model == model && s.chunking == self.chunking
        }) {
            // Same text, model and chunking (e.g. a redelivery after a crash between commit and ack): the
            // vectors would be the same, so no embedding call is paid for again.
            tracing::info!("document unchanged; keeping its vectors");
            let change = DocumentChange::Keep {
                document: DocumentState::for_job(job, document_sha, model, &self.chunking),
                chunk_count: chunks.len(),
            };
            let commit = DocumentCommit::new(job, version, change);
            let result = timed_write("unchanged", self.committer.commit(commit)).await?;
            metrics::counter!(metric_names::CHUNKS_REUSED).increment(chunks.len() as u64);
            return Ok((result, chunks.len()));
        }
        let hashes: Vec<String> = chunks.iter().map(|c| content_sha256(c)).collect();
        let reused = if stored.is_some() {
            let keys: Vec<&str> = hashes.iter().map(String::as_str).collect();
            self.store
                .reusable_vectors(&job.collection, &job.document_id, model, &keys)
                .await
                .map_err(JobFailure::Store)?
        } else {
            HashMap::new()
        };
        // Each distinct chunk text not already stored is embedded once.
        let mut fresh_index: HashMap<&str, usize> = HashMap::new();
        let mut to_embed: Vec<&str> = Vec::new();
        for (chunk, hash) in chunks.iter().zip(&hashes) {
            if !reused.contains_key(hash) && !fresh_index.contains_key(hash.as_str()) {
                fresh_index.insert(hash, to_embed.len());
                to_embed.push(chunk);
            }
        }
        let fresh = if to_embed.is_empty() {
            Vec::new()
        } else {
            self.embedder.embed_all(&to_embed).await.map_err(JobFailure::Embed)?
        };
        if !reused.is_empty() {
            tracing::info!(
                reused = chunks.len() - to_embed.len(),
                embedded = to_embed.len(),
                "re-ingest: unchanged chunks keep their vectors"
            );
        }
        // Vectors move into their rows (a job holds each one once while its write waits); a chunk text that
        // recurs in the document shares the vector of its first row.
        let mut fresh: Vec<Option<Vec<f32>>> = fresh.into_iter().map(Some).collect();
        let mut first_row: HashMap<usize, usize> = HashMap::new();
        let mut rows: Vec<ChunkRow> = Vec::with_capacity(chunks.len());
        for (content, hash) in chunks.iter().zip(&hashes) {
            let embedding = match fresh_index.get(hash.as_str()) {
                Some(&i) => match fresh[i].take() {
                    Some(vector) => {
                        first_row.insert(i, rows.len());
                        Vector::from(vector)
                    }
                    None => rows[first_row[&i]].embedding.clone(),
                },
                // Every hash not embedded above was found among the stored vectors.
                None => reused.get(hash).cloned().expect("a chunk is either reused or freshly embedded"),
            };
            rows.push(ChunkRow { content: (*content).to_owned(), content_sha256: hash.clone(), embedding });
        }
        let row_count = rows.len();
        let commit = DocumentCommit::new(
            job,
            version,
            DocumentChange::Replace {
                document: DocumentState::for_job(job, document_sha, model, &self.chunking),
                chunks: rows,
            },
        );
        let result = timed_write("upsert", self.committer.commit(commit)).await?;
        metrics::counter!(metric_names::CHUNKS_EMBEDDED).increment(to_embed.len() as u64);
        metrics::counter!(metric_names::CHUNKS_REUSED).increment((row_count - to_embed.len()) as u64);
        Ok((result, row_count))
    }

    async fn fail(&self, job: &Job, failure: JobFailure, failed_attempts: u32) -> Outcome {
        let workers = failure.is_the_workers();
        let outcome = failure.outcome(failed_attempts, &self.retry);
        match &outcome {
            Outcome::GiveBack { failure, .. } if workers => {
                tracing::error!(error = %failure.detail, "a fault inside this worker failed the job; giving it back");
                self.record(job.job_id, Some(job), JobStatus::Failed, &failure.detail).await;
            }
            Outcome::GiveBack { failure, .. } => {
                // The pool logged the provider's answer once; a line per job would repeat it for the whole backlog.
                tracing::debug!(error = %failure.detail, "the embedding provider refuses every request; giving the job back");
                self.record(job.job_id, Some(job), JobStatus::Failed, &failure.detail).await;
            }
            Outcome::Retry { after, failed_attempts, failure } => {
                tracing::warn!(error = %failure.detail, failed_attempts, retry_in_ms = after.as_millis() as u64, "job failed; retrying later");
                self.record(job.job_id, Some(job), JobStatus::Failed, &failure.detail).await;
            }
            Outcome::DeadLetter { failed_attempts, failure } => {
                tracing::error!(error = %failure.detail, failed_attempts, class = %failure.class, "job failed for good; dead-lettering");
                self.record(job.job_id, Some(job), JobStatus::Dead, &failure.detail).await;
            }
            Outcome::Ack => {}
        }
        outcome
    }

    async fn record(&self, job_id: uuid::Uuid, job: Option<&Job>, status: JobStatus, error: &str) {
        let collection = job.map(|j| j.collection.as_str());
        let document_id = job.map(|j| j.document_id.as_str());
        let prefix = self.queue_prefix.as_deref();
        let recorded = self.store.record_failure(job_id, prefix, collection, document_id, status, error).await;
        if let Err(store_error) = recorded {
            tracing::warn!(%job_id, error = %store_error, "could not record the job's failure");
        }
    }
}

/// Runs a job's write, recording how long it took to commit (waiting for a group included) under `op`.
async fn timed_write<T>(
    op: &'static str,
    write: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, JobFailure> {
    let started = tokio::time::Instant::now();
    let result = write.await;
    metrics::histogram!(metric_names::DB_WRITE_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
    result.map_err(JobFailure::Store)
}

/// The job's place in its document's order of writes: the time in its UUIDv7 id, else now (a job whose id
/// carries no time is ordered by when a worker first ran it).
fn job_version(job: &Job) -> JobVersion {
    let at = job
        .created_at_ms()
        .and_then(|ms| DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).ok()?))
        .unwrap_or_else(Utc::now);
    JobVersion { at, job_id: job.job_id }
}

/// The job id of an oversized body, read from its first kilobyte only (the body is not parsed whole).
fn peek_job_id_bounded(body: &[u8]) -> Option<uuid::Uuid> {
    let head = &body[..body.len().min(1024)];
    let text = String::from_utf8_lossy(head);
    let start = text.find("\"job_id\"")?;
    let rest = &text[start + 8..];
    let open = rest.find('"')?;
    let candidate = rest.get(open + 1..open + 37)?;
    uuid::Uuid::try_parse(candidate).ok().filter(|_| candidate.len() == 36)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 3, delay_tiers: vec![Duration::from_secs(5), Duration::from_secs(60)] }
    }

    #[test]
    fn a_fault_inside_the_worker_never_dead_letters_the_job() {
        let internal = [
            JobFailure::Store(StoreError::Internal("the group committer has stopped".into())),
            JobFailure::Embed(EmbedError::Internal("the embedding dispatcher has stopped".into())),
        ];
        for failure in internal {
            let reason = failure.reason();
            // Even with its attempts used up, the job goes back with them unchanged.
            let outcome = failure.outcome(policy().max_attempts, &policy());
            let Outcome::GiveBack { after, failed_attempts, failure } = outcome else {
                panic!("{reason}: {outcome:?}")
            };
            assert_eq!((after, failed_attempts), (Duration::from_secs(5), 3), "{reason}");
            assert_eq!((failure.class, failure.reason.as_str()), (ErrorClass::Transient, reason));
        }
    }

    #[test]
    fn a_bad_setting_still_dead_letters_and_passing_trouble_retries() {
        let config = JobFailure::Store(StoreError::Config("bad".into()));
        assert!(matches!(config.outcome(0, &policy()), Outcome::DeadLetter { failed_attempts: 1, .. }));
        let pool = JobFailure::Store(StoreError::Pool("timed out".into()));
        let Outcome::Retry { after, failed_attempts: 1, failure } = pool.outcome(0, &policy()) else {
            panic!("a pool timeout retries")
        };
        assert_eq!((after, failure.reason.as_str()), (Duration::from_secs(5), "database"));
        let worn_out = JobFailure::Store(StoreError::Pool("timed out".into()));
        assert!(matches!(worn_out.outcome(2, &policy()), Outcome::DeadLetter { failed_attempts: 3, .. }));
    }
}
