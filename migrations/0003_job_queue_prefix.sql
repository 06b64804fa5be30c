-- The queue prefix (`--queue-prefix`, the topology a worker consumes from) of each job, so `quern status` counts the
-- jobs of the prefix whose queues it shows, not those of every prefix sharing the database.

-- NULL for rows written by workers older than this migration (and for a job whose `running` row was lost before
-- its success was recorded). Nullable with no default: Postgres only changes the catalog, however large the table.
-- No index of its own: the overview already reads a window of `updated_at` through quern_jobs_status_updated_at,
-- and another index would be written by every job, twice, for a query an operator runs now and then.
ALTER TABLE quern_jobs ADD COLUMN queue_prefix text;
