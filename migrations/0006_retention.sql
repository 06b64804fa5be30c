-- Retention: finished jobs and old tombstones are pruned, in small batches, by the worker holding the maintenance
-- lease or by `quern prune` (crates/quern-store/src/retention.rs says why each step is safe beside the writers).

-- The tombstones (heads of deleted documents) by age, so a prune batch finds the oldest without reading every
-- document's head. Keyed on `version_at`, which every write changes: a head's update is no longer HOT (a new
-- primary-key entry per write), the price of finding old tombstones in a batch's time. Built in the migration's
-- transaction, which holds writers of quern_document_heads back while it reads the table once.
CREATE INDEX quern_document_heads_tombstones ON quern_document_heads (version_at) WHERE deleted;

-- One row: the newest version among the tombstones pruned so far. A job whose document has no head and whose
-- version is not newer than this may be older than a delete that was forgotten: its write is refused as stale
-- (dead-lettered) instead of bringing the document back. '-infinity' until a tombstone is pruned.
CREATE TABLE quern_prune_state (
    singleton                 boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    tombstones_pruned_through timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO quern_prune_state DEFAULT VALUES;

-- One row per prune run (not per dry run), for `quern status`; runs older than a week are pruned with the rest.
CREATE TABLE quern_prune_runs (
    run_id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- `worker <id>` or `quern prune`.
    pruned_by         text        NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL DEFAULT now(),
    -- Finished jobs last updated before this, and tombstones of versions before this, were due.
    job_cutoff        timestamptz NOT NULL,
    tombstone_cutoff  timestamptz NOT NULL,
    jobs_pruned       bigint      NOT NULL,
    tombstones_pruned bigint      NOT NULL,
    -- Why the run stopped early, if it did (what it pruned before is counted above).
    error             text
);
CREATE INDEX quern_prune_runs_finished_at ON quern_prune_runs (finished_at);
