//! Writing documents. A write is one transaction under a per-document lock that (1) checks the job is not
//! older than the document's current version, (2) replaces the chunks as a whole, and (3) records the job's
//! success, so a reader never sees old and new chunks mixed, a job is `succeeded` only if its rows are, and
//! of two jobs racing for one document the later one's state is what remains. The writes of several jobs
//! (to different documents) can share one transaction and its set-based statements: see
//! [`Store::commit_documents`] and [`crate::GroupCommitter`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use pgvector::{HalfVector, Vector};
use quern_core::{Job, JobOp};
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::{Store, StoreError, VectorStorage};

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
    /// An upsert of a document without a version (never written, or its tombstone was pruned) whose own version
    /// is not newer than the newest tombstone pruned: it may be older than a delete that was forgotten, so it
    /// changed nothing and is not recorded as succeeded. See [`crate::retention`] (the stale-job rule). A delete
    /// in that position is [`WriteResult::Superseded`]: the document is absent, as it asks.
    Stale,
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

impl Store {
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
                    "SELECT DISTINCT ON (c.content_sha256) c.content_sha256, c.embedding::vector
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

    /// Commits the writes of several jobs in one transaction, each to a different document, and returns what
    /// each did (in order). A handful of set-based statements serve the whole group: one lock statement, one
    /// version claim, one document upsert, one chunk delete, one chunk COPY, one job update; per-job work
    /// would cost a transaction, its commit flush and about eight round trips for every job.
    ///
    /// Every document of the group is locked first, in one order shared by every worker so two groups
    /// cannot deadlock; each later statement takes its own snapshot after the locks are held (READ
    /// COMMITTED), so it sees the writes of any transaction that held a lock before.
    ///
    /// Two writes to one document in one group are refused (the version claim could not order them): the
    /// caller, [`crate::GroupCommitter`], never groups them.
    pub async fn commit_documents(&self, commits: &[DocumentCommit]) -> Result<Vec<WriteResult>, StoreError> {
        let mut keys = std::collections::HashSet::new();
        if let Some(twice) = commits.iter().find(|c| !keys.insert((&c.collection, &c.document_id))) {
            return Err(StoreError::Internal(format!(
                "two writes to document {}/{} in one transaction",
                twice.collection, twice.document_id
            )));
        }
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        self.timed("commit documents", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
            let claimed = claim_versions(&tx, commits).await?;
            let applied: Vec<&DocumentCommit> = commits
                .iter()
                .zip(&claimed)
                .filter(|(_, claimed)| **claimed == WriteResult::Applied)
                .map(|(c, _)| c)
                .collect();
            upsert_documents(&tx, &applied).await?;
            delete_chunks(&tx, &applied).await?;
            delete_documents(&tx, &applied).await?;
            insert_chunks(&tx, &applied).await?;
            mark_succeeded(&tx, commits, &claimed).await?;
            tx.commit().await.map_err(StoreError::db("commit"))?;
            Ok(claimed)
        })
        .await
    }
}

/// One job's write to its document, owned so it can wait in a [`crate::GroupCommitter`] for a transaction.
#[derive(Debug, Clone)]
pub struct DocumentCommit {
    /// The job writing.
    pub job_id: uuid::Uuid,
    /// Its document's collection.
    pub collection: String,
    /// Its document.
    pub document_id: String,
    /// Its place in the document's order of writes.
    pub version: JobVersion,
    /// What it changes.
    pub change: DocumentChange,
}

impl DocumentCommit {
    /// The write of `job` at `version`.
    pub fn new(job: &Job, version: JobVersion, change: DocumentChange) -> DocumentCommit {
        DocumentCommit {
            job_id: job.job_id,
            collection: job.collection.clone(),
            document_id: job.document_id.clone(),
            version,
            change,
        }
    }

    /// Chunk rows it inserts: what a group is bounded by.
    pub fn rows(&self) -> usize {
        match &self.change {
            DocumentChange::Replace { chunks, .. } => chunks.len(),
            DocumentChange::Keep { .. } | DocumentChange::Delete => 0,
        }
    }

    fn op(&self) -> &'static str {
        match self.change {
            DocumentChange::Delete => JobOp::Delete.as_str(),
            DocumentChange::Replace { .. } | DocumentChange::Keep { .. } => JobOp::Upsert.as_str(),
        }
    }

    fn document(&self) -> Option<(&DocumentState, usize)> {
        match &self.change {
            DocumentChange::Replace { document, chunks } => Some((document, chunks.len())),
            DocumentChange::Keep { document, chunk_count } => Some((document, *chunk_count)),
            DocumentChange::Delete => None,
        }
    }
}

/// What a write does to its document.
#[derive(Debug, Clone)]
pub enum DocumentChange {
    /// New text: the chunks are replaced as a whole.
    Replace {
        /// The document's new facts.
        document: DocumentState,
        /// Its chunks, in order.
        chunks: Vec<ChunkRow>,
    },
    /// Same text, model and chunking: the chunks stay, the facts and version move on.
    Keep {
        /// The document's new facts.
        document: DocumentState,
        /// How many chunks it has (recorded on the job).
        chunk_count: usize,
    },
    /// The document and its chunks go; its version stays as a tombstone.
    Delete,
}

/// What is stored about a document besides its chunks.
#[derive(Debug, Clone)]
pub struct DocumentState {
    /// SHA-256 of the whole text.
    pub content_sha256: String,
    /// Model that made the vectors.
    pub embedding_model: String,
    /// How the text was cut.
    pub chunking: String,
    /// The job's metadata.
    pub metadata: Option<Value>,
}

impl DocumentState {
    /// What `job` stores about its document: the text's hash, the model and chunking, and its metadata.
    pub fn for_job(job: &Job, content_sha256: String, embedding_model: &str, chunking: &str) -> DocumentState {
        DocumentState {
            content_sha256,
            embedding_model: embedding_model.to_owned(),
            chunking: chunking.to_owned(),
            metadata: job.metadata.clone().map(Value::Object),
        }
    }
}

fn count_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Locks every document of the group until commit, in one global order (by lock key), then moves each head to
/// its job's version unless the head is already later. Returns, per commit, whether the job may write
/// ([`WriteResult::Applied`]), a later job wrote the document or a stale delete finds it absent
/// ([`WriteResult::Superseded`]), or the upsert is stale: no head, and a version not newer than the pruning
/// watermark ([`WriteResult::Stale`], see [`crate::retention`]).
/// The advisory lock serialises writers of one document even before its head row exists, and keeps a prune from
/// taking its tombstone meanwhile; the claim reads the heads and the watermark with a snapshot taken after it.
async fn claim_versions(tx: &Transaction<'_>, commits: &[DocumentCommit]) -> Result<Vec<WriteResult>, StoreError> {
    let collections: Vec<&str> = commits.iter().map(|c| c.collection.as_str()).collect();
    let documents: Vec<&str> = commits.iter().map(|c| c.document_id.as_str()).collect();
    let lock = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock(key)
             FROM (SELECT DISTINCT hashtextextended(c || chr(31) || d, 0) AS key
                   FROM unnest($1::text[], $2::text[]) AS t(c, d) ORDER BY 1) AS keys",
        )
        .await
        .map_err(StoreError::db("prepare document locks"))?;
    tx.execute(&lock, &[&collections, &documents]).await.map_err(StoreError::db("lock documents"))?;
    let at: Vec<DateTime<Utc>> = commits.iter().map(|c| c.version.at).collect();
    let job_ids: Vec<uuid::Uuid> = commits.iter().map(|c| c.version.job_id).collect();
    let deleted: Vec<bool> = commits.iter().map(|c| matches!(c.change, DocumentChange::Delete)).collect();
    let claim = tx
        .prepare_cached(
            "WITH input AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[], $5::bool[])
                     AS t(collection, document_id, version_at, version_job_id, deleted)
             ), admitted AS MATERIALIZED (
                 SELECT input.* FROM input
                 WHERE input.version_at > coalesce(
                           (SELECT tombstones_pruned_through FROM quern_prune_state), '-infinity'::timestamptz)
                    OR EXISTS (SELECT 1 FROM quern_document_heads AS head
                               WHERE head.collection = input.collection AND head.document_id = input.document_id)
             ), claimed AS (
                 INSERT INTO quern_document_heads (collection, document_id, version_at, version_job_id, deleted)
                 SELECT collection, document_id, version_at, version_job_id, deleted FROM admitted
                 ON CONFLICT (collection, document_id) DO UPDATE SET
                     version_at = EXCLUDED.version_at, version_job_id = EXCLUDED.version_job_id,
                     deleted = EXCLUDED.deleted
                 WHERE (quern_document_heads.version_at, quern_document_heads.version_job_id)
                    <= (EXCLUDED.version_at, EXCLUDED.version_job_id)
                 RETURNING collection, document_id
             )
             SELECT collection, document_id, true FROM claimed
             UNION ALL
             SELECT collection, document_id, false FROM input
             WHERE NOT input.deleted AND NOT EXISTS (
                 SELECT 1 FROM admitted
                 WHERE admitted.collection = input.collection AND admitted.document_id = input.document_id)",
        )
        .await
        .map_err(StoreError::db("prepare version claim"))?;
    let rows = tx
        .query(&claim, &[&collections, &documents, &at, &job_ids, &deleted])
        .await
        .map_err(StoreError::db("claim document versions"))?;
    let decided: std::collections::HashMap<(String, String), WriteResult> = rows
        .iter()
        .map(|row| {
            let won: bool = row.get(2);
            ((row.get(0), row.get(1)), if won { WriteResult::Applied } else { WriteResult::Stale })
        })
        .collect();
    Ok(commits
        .iter()
        .map(|c| {
            let key = (c.collection.clone(), c.document_id.clone());
            decided.get(&key).copied().unwrap_or(WriteResult::Superseded)
        })
        .collect())
}

async fn upsert_documents(tx: &Transaction<'_>, applied: &[&DocumentCommit]) -> Result<(), StoreError> {
    let kept: Vec<(&DocumentCommit, &DocumentState, usize)> =
        applied.iter().filter_map(|c| c.document().map(|(state, count)| (*c, state, count))).collect();
    if kept.is_empty() {
        return Ok(());
    }
    let collections: Vec<&str> = kept.iter().map(|(c, _, _)| c.collection.as_str()).collect();
    let documents: Vec<&str> = kept.iter().map(|(c, _, _)| c.document_id.as_str()).collect();
    let hashes: Vec<&str> = kept.iter().map(|(_, s, _)| s.content_sha256.as_str()).collect();
    let counts: Vec<i32> = kept.iter().map(|(_, _, n)| count_i32(*n)).collect();
    let metadata: Vec<Option<&Value>> = kept.iter().map(|(_, s, _)| s.metadata.as_ref()).collect();
    let models: Vec<&str> = kept.iter().map(|(_, s, _)| s.embedding_model.as_str()).collect();
    let chunkings: Vec<&str> = kept.iter().map(|(_, s, _)| s.chunking.as_str()).collect();
    let job_ids: Vec<uuid::Uuid> = kept.iter().map(|(c, _, _)| c.job_id).collect();
    let upsert = tx
        .prepare_cached(
            "INSERT INTO quern_documents
                 (collection, document_id, content_sha256, chunk_count, metadata, embedding_model, chunking, last_job_id, updated_at)
             SELECT c, d, h, n, m, e, k, j, now()
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::jsonb[], $6::text[], $7::text[], $8::uuid[])
                  AS t(c, d, h, n, m, e, k, j)
             ON CONFLICT (collection, document_id) DO UPDATE SET
                 content_sha256 = EXCLUDED.content_sha256, chunk_count = EXCLUDED.chunk_count,
                 metadata = EXCLUDED.metadata, embedding_model = EXCLUDED.embedding_model,
                 chunking = EXCLUDED.chunking, last_job_id = EXCLUDED.last_job_id, updated_at = now()",
        )
        .await
        .map_err(StoreError::db("prepare document upsert"))?;
    tx.execute(&upsert, &[&collections, &documents, &hashes, &counts, &metadata, &models, &chunkings, &job_ids])
        .await
        .map_err(StoreError::db("upsert documents"))?;
    Ok(())
}

/// Deletes the chunks of every replaced or deleted document (kept documents keep theirs).
async fn delete_chunks(tx: &Transaction<'_>, applied: &[&DocumentCommit]) -> Result<(), StoreError> {
    let replaced: Vec<&DocumentCommit> =
        applied.iter().copied().filter(|c| !matches!(c.change, DocumentChange::Keep { .. })).collect();
    let statement = "DELETE FROM quern_chunks AS chunk USING unnest($1::text[], $2::text[]) AS t(c, d)
                     WHERE chunk.collection = t.c AND chunk.document_id = t.d";
    delete_rows_of(tx, &replaced, statement, "delete chunks").await
}

/// Deletes the document rows of every deleted document.
async fn delete_documents(tx: &Transaction<'_>, applied: &[&DocumentCommit]) -> Result<(), StoreError> {
    let deleted: Vec<&DocumentCommit> =
        applied.iter().copied().filter(|c| matches!(c.change, DocumentChange::Delete)).collect();
    let statement = "DELETE FROM quern_documents AS doc USING unnest($1::text[], $2::text[]) AS t(c, d)
                     WHERE doc.collection = t.c AND doc.document_id = t.d";
    delete_rows_of(tx, &deleted, statement, "delete documents").await
}

/// Runs `statement`, a delete taking arrays of collections and document ids, for `commits`' documents.
async fn delete_rows_of(
    tx: &Transaction<'_>,
    commits: &[&DocumentCommit],
    statement: &str,
    operation: &'static str,
) -> Result<(), StoreError> {
    if commits.is_empty() {
        return Ok(());
    }
    let collections: Vec<&str> = commits.iter().map(|c| c.collection.as_str()).collect();
    let documents: Vec<&str> = commits.iter().map(|c| c.document_id.as_str()).collect();
    let delete = tx.prepare_cached(statement).await.map_err(StoreError::db(operation))?;
    tx.execute(&delete, &[&collections, &documents]).await.map_err(StoreError::db(operation))?;
    Ok(())
}

/// Inserts the chunks of every replaced document with one binary COPY. Measured against one INSERT of unnested
/// arrays: with 8 KB documents (`bash scripts/bench.sh --latency-ms 0 --vector-index deferred --documents 5000`)
/// COPY used a little less Postgres CPU (2.75-2.77 s against 2.85-3.71); with one-chunk documents (groups of
/// many small writes, where COPY's extra round trip counts) the two were within the runs' noise (3,900-4,300
/// against 4,200-4,400 chunks/s). Postgres has no arrays to unpack, and the worker no statement of arrays to
/// encode: the rows stream in small buffers, which took a worker at 64 requests in flight from 60 to 45 MB.
/// The vector type (`vector` or `halfvec`, see [`crate::VectorStorage`]) has an OID of its own in every database,
/// so it is read from the column through a prepared (and cached) statement.
async fn insert_chunks(tx: &Transaction<'_>, applied: &[&DocumentCommit]) -> Result<(), StoreError> {
    let rows: usize = applied.iter().map(|c| c.rows()).sum();
    if rows == 0 {
        return Ok(());
    }
    let probe = tx
        .prepare_cached("SELECT embedding FROM quern_chunks LIMIT 0")
        .await
        .map_err(StoreError::db("look up the vector type"))?;
    let vector = probe.columns()[0].type_().clone();
    let half_precision = VectorStorage::from_type_name(vector.name()) == Some(VectorStorage::Halfvec);
    // Under the segment switch lock (shared, until commit): the segment read here cannot be sealed before the
    // rows are in it. See crate::segments.
    let segment: i64 =
        tx.query_one("SELECT quern_hot_segment()", &[]).await.map_err(StoreError::db("read the hot segment"))?.get(0);
    let sink = tx
        .copy_in(
            "COPY quern_chunks (collection, document_id, chunk_index, content, content_sha256, embedding, segment) \
             FROM STDIN BINARY",
        )
        .await
        .map_err(StoreError::db("start chunk copy"))?;
    let columns = [Type::TEXT, Type::TEXT, Type::INT4, Type::TEXT, Type::TEXT, vector, Type::INT8];
    let writer = BinaryCopyInWriter::new(sink, &columns);
    let mut writer = std::pin::pin!(writer);
    for commit in applied {
        if let DocumentChange::Replace { chunks, .. } = &commit.change {
            for (index, chunk) in chunks.iter().enumerate() {
                let index = count_i32(index);
                let half = half_precision.then(|| HalfVector::from_f32_slice(chunk.embedding.as_slice()));
                let embedding: &(dyn ToSql + Sync) = match &half {
                    Some(half) => half,
                    None => &chunk.embedding,
                };
                let row: [&(dyn ToSql + Sync); 7] = [
                    &commit.collection,
                    &commit.document_id,
                    &index,
                    &chunk.content,
                    &chunk.content_sha256,
                    embedding,
                    &segment,
                ];
                writer.as_mut().write(&row).await.map_err(StoreError::db("copy chunk"))?;
            }
        }
    }
    writer.finish().await.map_err(StoreError::db("insert chunks"))?;
    Ok(())
}

/// Records every job of the group as succeeded, with the chunks it wrote (none for a superseded job; 0 for a
/// delete), but a stale one (the worker records it dead). An upsert, not an update: a job row may be missing if
/// its `running` write was lost.
async fn mark_succeeded(
    tx: &Transaction<'_>,
    commits: &[DocumentCommit],
    claimed: &[WriteResult],
) -> Result<(), StoreError> {
    let succeeded: Vec<(&DocumentCommit, WriteResult)> =
        commits.iter().zip(claimed.iter().copied()).filter(|(_, result)| *result != WriteResult::Stale).collect();
    if succeeded.is_empty() {
        return Ok(());
    }
    let job_ids: Vec<uuid::Uuid> = succeeded.iter().map(|(c, _)| c.job_id).collect();
    let collections: Vec<&str> = succeeded.iter().map(|(c, _)| c.collection.as_str()).collect();
    let documents: Vec<&str> = succeeded.iter().map(|(c, _)| c.document_id.as_str()).collect();
    let ops: Vec<&str> = succeeded.iter().map(|(c, _)| c.op()).collect();
    let counts: Vec<Option<i32>> = succeeded
        .iter()
        .map(|(c, result)| match (&c.change, result) {
            (DocumentChange::Delete, _) => Some(0),
            (_, WriteResult::Applied) => c.document().map(|(_, n)| count_i32(n)),
            (_, WriteResult::Superseded | WriteResult::Stale) => None,
        })
        .collect();
    let mark = tx
        .prepare_cached(
            "INSERT INTO quern_jobs (job_id, collection, document_id, op, status, attempts, chunk_count)
             SELECT j, c, d, o, 'succeeded', 1, n FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[])
                  AS t(j, c, d, o, n)
             ON CONFLICT (job_id) DO UPDATE SET status = 'succeeded', last_error = NULL,
                 chunk_count = EXCLUDED.chunk_count, updated_at = now()",
        )
        .await
        .map_err(StoreError::db("prepare job success"))?;
    tx.execute(&mark, &[&job_ids, &collections, &documents, &ops, &counts])
        .await
        .map_err(StoreError::db("mark jobs succeeded"))?;
    Ok(())
}
