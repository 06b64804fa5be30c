-- Chunks in segments, so that committing a chunk never pays for HNSW graph upkeep.
--
-- `quern_chunks` becomes a table partitioned by `segment`. Writers insert into the one hot segment, which has no
-- vector index (a search scans it exactly, so a committed chunk is found at once). Once the hot segment holds
-- enough rows, a worker holding the maintenance lease seals it (the next one turns hot) and builds its HNSW index
-- in one bulk pass, and merges sealed segments in tiers so that a search visits few of them. A query on
-- `quern_chunks` (`ORDER BY embedding <=> $1 LIMIT k`) reads every segment through its own index and merges the
-- results (Merge Append); see docs/segments.md.
--
-- The existing table is converted in place, without rewriting it: it becomes segment 1, sealed, keeping its index
-- if it has one (the maintainer builds one if it does not).

-- One row per segment, hot, sealed or indexed, and per merge in progress.
CREATE TABLE quern_segments (
    segment     bigint      PRIMARY KEY,
    -- hot: receives the inserts; sealed: waits for its index; indexed: has a valid HNSW index;
    -- merging: a table being filled from `merged_from`, not yet part of quern_chunks.
    state       text        NOT NULL CHECK (state IN ('hot', 'sealed', 'indexed', 'merging')),
    -- Rows when sealed or merged (deletes lower the real count later).
    row_count   bigint,
    merged_from bigint[],
    created_at  timestamptz NOT NULL DEFAULT now(),
    sealed_at   timestamptz,
    indexed_at  timestamptz
);
CREATE UNIQUE INDEX quern_segments_one_hot ON quern_segments ((true)) WHERE state = 'hot';
CREATE SEQUENCE quern_segment_ids;

-- The hot segment, read under a shared advisory lock ("quern_sg") held until the transaction ends. Sealing takes
-- that lock exclusively, so once a segment is sealed no transaction can still insert into it: sealed segments only
-- lose rows, which is what lets a merge copy them while writers carry on. Volatile, so its second statement reads
-- with a snapshot taken after the lock is granted. It is the default of `quern_chunks.segment`: an application
-- inserting chunks itself needs no change. Quern's writers call it once per transaction and name it in their COPY.
CREATE FUNCTION quern_hot_segment() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock_shared(8175552240713429863);
    SELECT segment FROM quern_segments WHERE state = 'hot';
$$;

-- Every segment is checked against quern_documents by the writers (which delete a document's chunks before its
-- row); a foreign key on each segment would make attaching a merged one lock quern_documents while it validates.
ALTER TABLE quern_chunks DROP CONSTRAINT IF EXISTS quern_chunks_collection_document_id_fkey;
ALTER TABLE quern_chunks RENAME TO quern_chunks_segment_1;
ALTER INDEX quern_chunks_pkey RENAME TO quern_chunks_segment_1_pkey;
ALTER INDEX quern_chunks_document_content RENAME TO quern_chunks_segment_1_document_content;
ALTER INDEX IF EXISTS quern_chunks_embedding_hnsw RENAME TO quern_chunks_segment_1_hnsw;
-- A constant default and a check: Postgres changes only the catalog, then proves the partition bound from the check
-- instead of scanning again when attaching.
ALTER TABLE quern_chunks_segment_1 ADD COLUMN segment bigint NOT NULL DEFAULT 1;
ALTER TABLE quern_chunks_segment_1 ADD CONSTRAINT quern_chunks_segment_1_bound CHECK (segment = 1);

CREATE TABLE quern_chunks (
    collection     text        NOT NULL,
    document_id    text        NOT NULL,
    chunk_index    integer     NOT NULL,
    content        text        NOT NULL,
    content_sha256 text        NOT NULL,
    embedding      vector({{dimension}}) NOT NULL,
    segment        bigint      NOT NULL DEFAULT quern_hot_segment()
) PARTITION BY LIST (segment);
-- On every segment: a document's chunks are found (replaced, deleted, reused) by this index.
CREATE INDEX quern_chunks_document_content ON quern_chunks (collection, document_id, content_sha256);

ALTER TABLE quern_chunks ATTACH PARTITION quern_chunks_segment_1 FOR VALUES IN (1);
ALTER TABLE quern_chunks_segment_1 ALTER COLUMN segment DROP DEFAULT;

INSERT INTO quern_segments (segment, state, row_count, sealed_at, indexed_at)
SELECT 1, CASE WHEN valid THEN 'indexed' ELSE 'sealed' END, (SELECT count(*) FROM quern_chunks_segment_1), now(),
       CASE WHEN valid THEN now() END
FROM (SELECT coalesce((SELECT x.indisvalid FROM pg_index x
                       WHERE x.indexrelid = to_regclass('quern_chunks_segment_1_hnsw')), false) AS valid) AS index;
SELECT setval('quern_segment_ids', 2);
CREATE TABLE quern_chunks_segment_2 PARTITION OF quern_chunks FOR VALUES IN (2);
INSERT INTO quern_segments (segment, state) VALUES (2, 'hot');
