//! Writing documents: the chunks of a document are replaced as a whole in one transaction, together with the
//! job's success, so a reader never sees old and new chunks mixed and a job is `succeeded` only if its rows are.

use pgvector::Vector;
use quern_core::Job;
use serde_json::Value;
use tokio_postgres::Transaction;

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

impl Store {
    /// Replaces the document's chunks with `chunks` and records the job as succeeded, atomically.
    pub async fn commit_upsert(
        &self,
        job: &Job,
        content_sha256: &str,
        embedding_model: &str,
        chunks: &[ChunkRow],
    ) -> Result<(), StoreError> {
        self.timed("commit upsert", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
            lock_document(&tx, &job.collection, &job.document_id).await?;
            let chunk_count = i32::try_from(chunks.len()).unwrap_or(i32::MAX);
            let metadata = job.metadata.clone().map(Value::Object);
            let upsert = tx
                .prepare_cached(
                    "INSERT INTO quern_documents
                         (collection, document_id, content_sha256, chunk_count, metadata, embedding_model, last_job_id, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, now())
                     ON CONFLICT (collection, document_id) DO UPDATE SET
                         content_sha256 = EXCLUDED.content_sha256, chunk_count = EXCLUDED.chunk_count,
                         metadata = EXCLUDED.metadata, embedding_model = EXCLUDED.embedding_model,
                         last_job_id = EXCLUDED.last_job_id, updated_at = now()",
                )
                .await
                .map_err(StoreError::db("prepare document upsert"))?;
            tx.execute(
                &upsert,
                &[&job.collection, &job.document_id, &content_sha256, &chunk_count, &metadata, &embedding_model, &job.job_id],
            )
            .await
            .map_err(StoreError::db("upsert document"))?;
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
            mark_succeeded(&tx, job, chunk_count).await?;
            tx.commit().await.map_err(StoreError::db("commit"))
        })
        .await
    }

    /// Removes the document and its chunks and records the job as succeeded, atomically.
    /// Deleting a document that does not exist succeeds: the end state is what was asked for.
    pub async fn commit_delete(&self, job: &Job) -> Result<(), StoreError> {
        self.timed("commit delete", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
            lock_document(&tx, &job.collection, &job.document_id).await?;
            delete_chunks(&tx, job).await?;
            tx.execute(
                "DELETE FROM quern_documents WHERE collection = $1 AND document_id = $2",
                &[&job.collection, &job.document_id],
            )
            .await
            .map_err(StoreError::db("delete document"))?;
            mark_succeeded(&tx, job, 0).await?;
            tx.commit().await.map_err(StoreError::db("commit"))
        })
        .await
    }
}

/// Serialises writers of one document until commit, so two jobs for it never interleave their rows.
async fn lock_document(tx: &Transaction<'_>, collection: &str, document_id: &str) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 0))", &[&collection, &document_id])
        .await
        .map_err(StoreError::db("lock document"))?;
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

async fn mark_succeeded(tx: &Transaction<'_>, job: &Job, chunk_count: i32) -> Result<(), StoreError> {
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
