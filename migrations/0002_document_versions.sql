-- Idempotency and ordering of jobs for the same document.

-- How the stored chunks were cut: a re-ingest with the same text, model and chunking needs no new vectors.
ALTER TABLE quern_documents ADD COLUMN chunking text NOT NULL DEFAULT '';

-- The newest version applied to each document, kept after a delete as a tombstone, so a job older than the
-- document's current state (a late redelivery, or a slower worker) cannot overwrite it or bring it back.
CREATE TABLE quern_document_heads (
    collection     text        NOT NULL,
    document_id    text        NOT NULL,
    version_at     timestamptz NOT NULL,
    version_job_id uuid        NOT NULL,
    deleted        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (collection, document_id)
);

-- Chunk vectors are looked up by content hash when a document is re-ingested.
CREATE INDEX quern_chunks_document_content ON quern_chunks (collection, document_id, content_sha256);
