//! Writing documents. Each write is one transaction under a per-document lock that (1) checks the job is not
//! older than the document's current version, (2) replaces the chunks as a whole, and (3) records the job's
//! success, so a reader never sees old and new chunks mixed, a job is `succeeded` only if its rows are, and
//! of two jobs racing for one document the later one's state is what remains.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use pgvector::Vector;
use quern_core::Job;
use serde_json::Value;

use crate::{Store, StoreError};

/// One chunk ready to store.
#[derive(Debug, Clone)]
pub struct ChunkRow {
    /// The chunk's text.
    pub content: String,
    /// SHA-256 of the text.
    pub content_sha256: String,
    /// Its vector.
    pub embedding: Vector,
}

/// A job's place in the order of writes to its document: by time, then by job id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobVersion {
    /// When the job was created (from a UUIDv7 job id) or, failing that, first seen by a worker.
    pub at: DateTime<Utc>,
    /// Tie-breaker.
    pub job_id: uuid::Uuid,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// The job's state is now the document's state.
    Applied,
    /// A later job already wrote the document; this one changed nothing (and still succeeded).
    Superseded,
}

/// What is stored about a document, to decide how much of a re-ingest needs new vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    /// SHA-256 of the text last ingested.
    pub content_sha256: String,
    /// Model that made its vectors.
    pub embedding_model: String,
    /// How it was cut into chunks (e.g. `chars:1000:200`).
    pub chunking: String,
}

/// A document write: the job, its version, and what to store.
#[derive(Debug)]
pub struct DocumentWrite<'a> {
    /// The job writing.
    pub job: &'a Job,
    /// Its place in the document's order of writes.
    pub version: JobVersion,
    /// SHA-256 of the whole text.
    pub content_sha256: &'a str,
    /// Model that made the vectors.
    pub embedding_model: &'a str,
    /// How the text was cut.
    pub chunking: &'a str,
}

impl Store {
    /// The stored facts about a document, if it exists.
    pub async fn stored_document(
        &self,
        collection: &str,
        document_id: &str,
    ) -> Result<Option<StoredDocument>, StoreError> {
        self.timed("read document", async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT content_sha256, embedding_model, chunking FROM quern_documents
                     WHERE collection = $1 AND document_id = $2",
                    &[&collection, &document_id],
                )
                .await
                .map_err(StoreError::db("read document"))?;
            Ok(row.map(|row| StoredDocument {
                content_sha256: row.get(0),
                embedding_model: row.get(1),
                chunking: row.get(2),
            }))
        })
        .await
    }

    /// Vectors of the document's stored chunks whose text hash is in `hashes`, if they were made by `model`:
    /// a re-ingest embeds only the chunks whose text changed.
    pub async fn reusable_vectors(
        &self,
        collection: &str,
        document_id: &str,
        model: &str,
        hashes: &[&str],
    ) -> Result<HashMap<String, Vector>, StoreError> {
        self.timed("read reusable vectors", async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT DISTINCT ON (c.content_sha256) c.content_sha256, c.embedding
                     FROM quern_chunks c
                     JOIN quern_documents d USING (collection, document_id)
                     WHERE c.collection = $1 AND c.document_id = $2 AND d.embedding_model = $3
                       AND c.content_sha256 = ANY($4)",
                    &[&collection, &document_id, &model, &hashes],
                )
                .await
                .map_err(StoreError::db("read reusable vectors"))?;
            Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await
    }

    /// Replaces the document's chunks with `chunks` and records the job as succeeded, atomically; unless a
    /// later job already wrote the document.
    pub async fn commit_upsert(
        &self,
        write: &DocumentWrite<'_>,
        chunks: &[ChunkRow],
    ) -> Result<WriteResult, StoreError> {
        self.timed("commit upsert", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
            let job = write.job;
            if !claim_version(&tx, job, write.version, false).await? {
                mark_succeeded(&tx, job, None).await?;
                tx.commit().await.map_err(StoreError::db("commit"))?;
                return Ok(WriteResult::Superseded);
            }
            let chunk_count = i32::try_from(chunks.len()).unwrap_or(i32::MAX);
            upsert_document(&tx, write, chunk_count).await?;
            delete_chunks(&tx, job).await?;
            if !chunks.is_empty() {
                let indices: Vec<i32> = (0..chunk_count).collect();
                let contents: Vec<&str> = chunks.iter().map(|c| c.content.as_str()).collect();
                let hashes: Vec<&str> = chunks.iter().map(|c| c.content_sha256.as_str()).collect();
                let embeddings: Vec<&Vector> = chunks.iter().map(|c| &c.embedding).collect();
                // One statement for all chunks: arrays unnested server-side, not one round trip per row.
                let insert = tx
                    .prepare_cached(
                        "INSERT INTO quern_chunks (collection, document_id, chunk_index, content, content_sha256, embedding)
                         SELECT $1, $2, t.i, t.c, t.h, t.e
                         FROM unnest($3::int4[], $4::text[], $5::text[], $6::vector[]) AS t(i, c, h, e)",
                    )
                    .await
                    .map_err(StoreError::db("prepare chunk insert"))?;
                tx.execute(&insert, &[&job.collection, &job.document_id, &indices, &contents, &hashes, &embeddings])
                    .await
                    .map_err(StoreError::db("insert chunks"))?;
            }
            mark_succeeded(&tx, job, Some(chunk_count)).await?;
            tx.commit().await.map_err(StoreError::db("commit"))?;
            Ok(WriteResult::Applied)
        })
        .await
    }

    /// Records a re-ingest whose text, model and chunking are unchanged: the chunks stay, the metadata and
    /// version move on, the job succeeds.
    pub async fn commit_unchanged(
        &self,
        write: &DocumentWrite<'_>,
        chunk_count: usize,
    ) -> Result<WriteResult, StoreError> {
        self.timed("commit unchanged", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
            let job = write.job;
            let chunk_count = i32::try_from(chunk_count).unwrap_or(i32::MAX);
            let result = if claim_version(&tx, job, write.version, false).await? {
                upsert_document(&tx, write, chunk_count).await?;
                WriteResult::Applied
            } else {
                WriteResult::Superseded
            };
            mark_succeeded(&tx, job, (result == WriteResult::Applied).then_some(chunk_count)).await?;
            tx.commit().await.map_err(StoreError::db("commit"))?;
            Ok(result)
        })
        .await
    }

    /// Removes the document and its chunks (leaving a tombstone version) and records the job as succeeded,
    /// atomically. Deleting a document that does not exist succeeds: the end state is what was asked for.
    pub async fn commit_delete(&self, job: &Job, version: JobVersion) -> Result<WriteResult, StoreError> {
        self.timed("commit delete", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
            let result = if claim_version(&tx, job, version, true).await? {
                delete_chunks(&tx, job).await?;
                tx.execute(
                    "DELETE FROM quern_documents WHERE collection = $1 AND document_id = $2",
                    &[&job.collection, &job.document_id],
                )
                .await
                .map_err(StoreError::db("delete document"))?;
                WriteResult::Applied
            } else {
                WriteResult::Superseded
            };
            mark_succeeded(&tx, job, Some(0)).await?;
            tx.commit().await.map_err(StoreError::db("commit"))?;
            Ok(result)
        })
        .await
    }
}

/// Locks the document until commit and moves its head to this job's version, unless the head is already
/// later. Returns whether the job may write. The advisory lock serialises writers of one document even
/// before its head row exists.
async fn claim_version(
    tx: &Transaction<'_>,
    job: &Job,
    version: JobVersion,
    deleted: bool,
) -> Result<bool, StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 0))",
        &[&job.collection, &job.document_id],
    )
    .await
    .map_err(StoreError::db("lock document"))?;
    let claimed = tx
        .execute(
            "INSERT INTO quern_document_heads (collection, document_id, version_at, version_job_id, deleted)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (collection, document_id) DO UPDATE SET
                 version_at = EXCLUDED.version_at, version_job_id = EXCLUDED.version_job_id, deleted = EXCLUDED.deleted
             WHERE (quern_document_heads.version_at, quern_document_heads.version_job_id)
                <= (EXCLUDED.version_at, EXCLUDED.version_job_id)",
            &[&job.collection, &job.document_id, &version.at, &version.job_id, &deleted],
        )
        .await
        .map_err(StoreError::db("claim document version"))?;
    Ok(claimed == 1)
}

async fn upsert_document(tx: &Transaction<'_>, write: &DocumentWrite<'_>, chunk_count: i32) -> Result<(), StoreError> {
    let job = write.job;
    let metadata = job.metadata.clone().map(Value::Object);
    let upsert = tx
        .prepare_cached(
            "INSERT INTO quern_documents
                 (collection, document_id, content_sha256, chunk_count, metadata, embedding_model, chunking, last_job_id, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
             ON CONFLICT (collection, document_id) DO UPDATE SET
                 content_sha256 = EXCLUDED.content_sha256, chunk_count = EXCLUDED.chunk_count,
                 metadata = EXCLUDED.metadata, embedding_model = EXCLUDED.embedding_model,
                 chunking = EXCLUDED.chunking, last_job_id = EXCLUDED.last_job_id, updated_at = now()",
        )
        .await
        .map_err(StoreError::db("prepare document upsert"))?;
    tx.execute(
        &upsert,
        &[
            &job.collection,
            &job.document_id,
            &write.content_sha256,
            &chunk_count,
            &metadata,
            &write.embedding_model,
            &write.chunking,
            &job.job_id,
        ],
    )
    .await
    .map_err(StoreError::db("upsert document"))?;
    Ok(())
}

async fn delete_chunks(tx: &Transaction<'_>, job: &Job) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM quern_chunks WHERE collection = $1 AND document_id = $2",
        &[&job.collection, &job.document_id],
    )
    .await
    .map_err(StoreError::db("delete chunks"))?;
    Ok(())
}

/// `chunk_count` is `None` for a superseded job, which wrote no chunks of its own.
async fn mark_succeeded(tx: &Transaction<'_>, job: &Job, chunk_count: Option<i32>) -> Result<(), StoreError> {
    // An upsert, not an update: the job row may be missing if its `running` write was lost.
    tx.execute(
        "INSERT INTO quern_jobs (job_id, collection, document_id, op, status, attempts, chunk_count)
         VALUES ($1, $2, $3, $4, 'succeeded', 1, $5)
         ON CONFLICT (job_id) DO UPDATE SET status = 'succeeded', last_error = NULL,
             chunk_count = EXCLUDED.chunk_count, updated_at = now()",
        &[&job.job_id, &job.collection, &job.document_id, &job.op.as_str(), &chunk_count],
    )
    .await
    .map_err(StoreError::db("mark job succeeded"))?;
    Ok(())
}
