-- The storage of the vectors, `vector` (4 bytes per dimension) or `halfvec` (2 bytes), chosen by the setting
-- `--vector-storage` when the tables are created: `{{vector_storage}}` stands for it.
--
-- Only a table that holds no chunk yet is converted. Converting a filled one rewrites every segment and rebuilds
-- every index under an exclusive lock, which no upgrade should do on its own: docs/segments.md says how to do it
-- by hand. Quern's writers and maintainer read the column's type, so either storage works with every later step.
DO $$
DECLARE
    empty_segment bigint;
BEGIN
    IF '{{vector_storage}}' <> 'halfvec' OR EXISTS (SELECT 1 FROM quern_chunks) THEN
        RETURN;
    END IF;
    -- A new database has segment 1 from migration 4, empty, with an index of the `vector` operator class, which
    -- would refuse the new type: empty segments other than the hot one are dropped (the maintainer drops them
    -- anyway).
    FOR empty_segment IN SELECT segment FROM quern_segments WHERE state <> 'hot' LOOP
        EXECUTE format('DROP TABLE IF EXISTS quern_chunks_segment_%s', empty_segment);
        DELETE FROM quern_segments WHERE segment = empty_segment;
    END LOOP;
    ALTER TABLE quern_chunks ALTER COLUMN embedding TYPE halfvec({{dimension}});
END
$$;
