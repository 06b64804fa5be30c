-- pgvector smoke check (scripts/services.sh runs it on every start and before reusing a server; scripts/pg-cpu-check.sh
-- runs it in single-user mode under an emulated older CPU). It executes the code paths Quern's writes and searches
-- take: inserts into a table with an HNSW index (row-by-row graph upkeep, where a pgvector built for another CPU
-- dies with SIGILL), an index build over loaded rows (`quern index create`), and nearest-neighbour queries through
-- the index. Everything happens in one transaction that is rolled back: nothing is left behind.
-- One statement per line: single-user mode (`postgres --single`) reads a line as a statement.
BEGIN;
CREATE EXTENSION IF NOT EXISTS vector;
SELECT setseed(0.42);
CREATE TABLE quern_smoke_live (id int PRIMARY KEY, embedding vector(384) NOT NULL);
CREATE INDEX quern_smoke_live_hnsw ON quern_smoke_live USING hnsw (embedding vector_cosine_ops);
INSERT INTO quern_smoke_live SELECT i, (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE i > 0)::vector(384) FROM generate_series(1, 300) AS i;
CREATE TABLE quern_smoke_built (id int PRIMARY KEY, embedding vector(384) NOT NULL);
INSERT INTO quern_smoke_built SELECT id, embedding FROM quern_smoke_live;
CREATE INDEX quern_smoke_built_hnsw ON quern_smoke_built USING hnsw (embedding vector_cosine_ops);
SET LOCAL enable_seqscan = off;
SET LOCAL hnsw.ef_search = 100;
SELECT CASE WHEN (SELECT id FROM quern_smoke_live ORDER BY embedding <=> (SELECT embedding FROM quern_smoke_live WHERE id = 7) LIMIT 1) = 7 THEN 'quern-smoke: inserted ok' ELSE 'quern-smoke: WRONG nearest neighbour after inserts' END;
SELECT CASE WHEN (SELECT id FROM quern_smoke_built ORDER BY embedding <=> (SELECT embedding FROM quern_smoke_built WHERE id = 211) LIMIT 1) = 211 THEN 'quern-smoke: built ok' ELSE 'quern-smoke: WRONG nearest neighbour after a build' END;
ROLLBACK;
