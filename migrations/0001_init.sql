-- Quern schema v1: documents, their chunks with vectors, and the fate of every job.
-- `{{dimension}}` is replaced by the configured embedding dimension when the migration runs.

CREATE EXTENSION IF NOT EXISTS vector;

-- One row per (collection, document_id): what was last ingested, by which model.
CREATE TABLE quern_documents (
    collection      text        NOT NULL,
    document_id     text        NOT NULL,
    content_sha256  text        NOT NULL,
    chunk_count     integer     NOT NULL,
    metadata        jsonb,
    embedding_model text        NOT NULL,
    last_job_id     uuid,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, document_id)
);

-- The chunks of each document; replaced as a whole, atomically, when the document is re-ingested.
CREATE TABLE quern_chunks (
    collection     text        NOT NULL,
    document_id    text        NOT NULL,
    chunk_index    integer     NOT NULL,
    content        text        NOT NULL,
    -- Lets a re-ingest keep the vectors of chunks whose text and model did not change.
    content_sha256 text        NOT NULL,
    embedding      vector({{dimension}}) NOT NULL,
    PRIMARY KEY (collection, document_id, chunk_index),
    FOREIGN KEY (collection, document_id) REFERENCES quern_documents ON DELETE CASCADE
);

CREATE INDEX quern_chunks_embedding_hnsw ON quern_chunks USING hnsw (embedding vector_cosine_ops);

-- What a web tier queries to learn a job's fate. Producers record nothing: workers write every row.
CREATE TABLE quern_jobs (
    job_id      uuid        PRIMARY KEY,
    -- NULL only for a body too malformed to name them.
    collection  text,
    document_id text,
    op          text,
    status      text        NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
    attempts    integer     NOT NULL DEFAULT 0,
    last_error  text,
    chunk_count integer,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX quern_jobs_status_updated_at ON quern_jobs (status, updated_at);
