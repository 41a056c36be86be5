-- Smart Emission record chain: each raw hour's samples as columns (float64 per raw field,
-- reason codes where a sample is not a number), extracted once at harvest so refining and
-- every replay read no JSON (include/stationflow/refine/records/stored_columns.py).
-- A set belongs to the exact bytes it came from (content_hash) and to the raw field list
-- of its device type (fields_key); the refiner uses it only when both still match.

CREATE TABLE smartem_raw.sample_columns (
    raw_gid      bigint  PRIMARY KEY REFERENCES smartem_raw.timeseries (gid) ON DELETE CASCADE,
    content_hash text    NOT NULL,
    fields_key   text    NOT NULL,
    body         bytea   NOT NULL
);
-- Floats barely compress: storing them out of line uncompressed saves pglz's attempt.
ALTER TABLE smartem_raw.sample_columns ALTER COLUMN body SET STORAGE EXTERNAL;

-- The staged hours (pg_temp.raw_stage, before smartem_raw.merge_stage() empties it) whose
-- stored row has no usable set yet: new hours, changed hours, and hours stored before sets
-- existed or under another field list. Only these are extracted.
CREATE FUNCTION smartem_raw.stage_without_columns(keys text[])
RETURNS TABLE (device_id integer, day integer, hour integer)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT s.device_id, s.day, s.hour
      FROM pg_temp.raw_stage s
      LEFT JOIN smartem_raw.timeseries t
             ON t.device_id = s.device_id AND t.day = s.day AND t.hour = s.hour
            AND t.content_hash = s.content_hash
      LEFT JOIN smartem_raw.sample_columns c
             ON c.raw_gid = t.gid AND c.content_hash = t.content_hash
            AND c.fields_key = ANY (keys)
     WHERE c.raw_gid IS NULL;
END
$$;

-- Merge pg_temp.columns_stage into the sets of the stored hours with that content; a set of
-- other bytes or another field list is replaced. Returns the sets written.
CREATE FUNCTION smartem_raw.merge_columns() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    INSERT INTO smartem_raw.sample_columns AS c (raw_gid, content_hash, fields_key, body)
    SELECT t.gid, s.content_hash, s.fields_key, s.body
      FROM pg_temp.columns_stage s
      JOIN smartem_raw.timeseries t
        ON t.device_id = s.device_id AND t.day = s.day AND t.hour = s.hour
       AND t.content_hash = s.content_hash
    ON CONFLICT (raw_gid) DO UPDATE SET
        content_hash = EXCLUDED.content_hash,
        fields_key = EXCLUDED.fields_key,
        body = EXCLUDED.body
    WHERE c.content_hash <> EXCLUDED.content_hash OR c.fields_key <> EXCLUDED.fields_key;
    GET DIAGNOSTICS written = ROW_COUNT;
    DELETE FROM pg_temp.columns_stage;
    RETURN written;
END
$$;
