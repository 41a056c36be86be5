-- Smart Emission record chain, refine: hourly indicator values per device (seed 001 4.3),
-- with a unique key so a replay never duplicates, and the refiner's progress per raw hour
-- written in the transaction that writes the values. Last values (seed 001 4.2.4).

CREATE SCHEMA smartem_refined;

-- Every new or changed refined value takes the next number: publishers resume on it.
CREATE SEQUENCE smartem_refined.change_seq;

-- One row per device, indicator and hour. Hour h of day d covers (h-1):00-(h-1):59 UTC;
-- `time` is the end of that hour, as the original refiner stamped it.
CREATE TABLE smartem_refined.timeseries (
    gid          bigserial PRIMARY KEY,
    unique_id    text        NOT NULL,        -- '<device>-<yyyymmdd>-<h>-<name>'
    insert_time  timestamptz NOT NULL DEFAULT now(),
    update_time  timestamptz NOT NULL DEFAULT now(),
    device_id    integer     NOT NULL,
    device_type  text        NOT NULL,
    name         text        NOT NULL,
    label        text        NOT NULL,
    unit         text        NOT NULL,
    day          integer     NOT NULL CHECK (day BETWEEN 19700101 AND 29991231),
    hour         integer     NOT NULL CHECK (hour BETWEEN 1 AND 24),
    time         timestamptz NOT NULL,
    value        double precision NOT NULL,
    value_min    double precision NOT NULL,
    value_max    double precision NOT NULL,
    sample_count integer     NOT NULL CHECK (sample_count > 0),   -- valid samples only
    lon          double precision,
    lat          double precision,
    raw_gid      bigint,                      -- the smartem_raw.timeseries row it came from
    model_id     bigint,                      -- the calibration model applied, if any
    revision     integer     NOT NULL DEFAULT 1,
    change_seq   bigint      NOT NULL DEFAULT nextval('smartem_refined.change_seq'),
    UNIQUE (device_id, name, day, hour)
);
CREATE INDEX timeseries_change_seq ON smartem_refined.timeseries (change_seq);
CREATE INDEX timeseries_time ON smartem_refined.timeseries (time);

-- The refiner's progress: which revision of each raw hour it refined, and the outcome.
-- A raw hour is (re)refined when it has no row here or its revision moved on.
CREATE TABLE smartem_refined.raw_state (
    raw_gid      bigint      PRIMARY KEY
                             REFERENCES smartem_raw.timeseries (gid) ON DELETE CASCADE,
    raw_revision integer     NOT NULL,
    status       text        NOT NULL CHECK (status IN ('refined', 'rejected')),
    rows         integer     NOT NULL DEFAULT 0,   -- refined values it gave
    samples      integer     NOT NULL DEFAULT 0,
    bad_values   integer     NOT NULL DEFAULT 0,   -- sample values skipped (field x reason)
    error        text,                             -- why a rejected record was rejected
    refined_at   timestamptz NOT NULL DEFAULT now()
);

-- Per device: the newest hour refined and how much (for the completeness view).
CREATE VIEW smartem_refined.refiner_progress AS
SELECT r.device_id,
       max(r.hour_start) FILTER (WHERE s.status = 'refined') AS last_hour_start,
       count(*) FILTER (WHERE s.status = 'refined') AS hours_refined,
       count(*) FILTER (WHERE s.status = 'rejected') AS hours_rejected,
       count(*) FILTER (WHERE s.raw_gid IS NULL OR s.raw_revision <> r.revision)
           AS hours_pending
  FROM smartem_raw.timeseries r
  LEFT JOIN smartem_refined.raw_state s ON s.raw_gid = r.gid
 GROUP BY r.device_id;

-- Merge the refined values of a batch, staged by COPY in the session's temporary table
-- refined_stage (LIKE smartem_refined.timeseries): new values are added, changed ones
-- replaced (a new revision and change number), identical ones left alone; values of the
-- refined hours (`hours`: raw gids) for the refined indicators (`names`) that the new
-- refinement no longer gives are deleted.
CREATE FUNCTION smartem_refined.merge_stage(hours bigint[], names text[],
                                            OUT inserted bigint, OUT updated bigint,
                                            OUT unchanged bigint, OUT deleted bigint)
LANGUAGE plpgsql AS $$
DECLARE
    staged bigint;
BEGIN
    SELECT count(*) INTO staged FROM pg_temp.refined_stage;
    WITH gone AS (
        DELETE FROM smartem_refined.timeseries t
         USING smartem_raw.timeseries r
         WHERE r.gid = ANY (hours)
           AND t.device_id = r.device_id AND t.day = r.day AND t.hour = r.hour
           AND t.name = ANY (names)
           AND NOT EXISTS (SELECT 1 FROM pg_temp.refined_stage s
                            WHERE s.device_id = t.device_id AND s.name = t.name
                              AND s.day = t.day AND s.hour = t.hour)
        RETURNING 1
    )
    SELECT count(*) INTO deleted FROM gone;
    WITH merged AS (
        INSERT INTO smartem_refined.timeseries AS t
            (unique_id, device_id, device_type, name, label, unit, day, hour, time,
             value, value_min, value_max, sample_count, lon, lat, raw_gid, model_id)
        SELECT unique_id, device_id, device_type, name, label, unit, day, hour, time,
               value, value_min, value_max, sample_count, lon, lat, raw_gid, model_id
          FROM pg_temp.refined_stage
        ON CONFLICT (device_id, name, day, hour) DO UPDATE SET
            unique_id = EXCLUDED.unique_id,
            device_type = EXCLUDED.device_type,
            label = EXCLUDED.label,
            unit = EXCLUDED.unit,
            time = EXCLUDED.time,
            value = EXCLUDED.value,
            value_min = EXCLUDED.value_min,
            value_max = EXCLUDED.value_max,
            sample_count = EXCLUDED.sample_count,
            lon = EXCLUDED.lon,
            lat = EXCLUDED.lat,
            raw_gid = EXCLUDED.raw_gid,
            model_id = EXCLUDED.model_id,
            update_time = now(),
            revision = t.revision + 1,
            change_seq = nextval('smartem_refined.change_seq')
        WHERE (t.label, t.unit, t.value, t.value_min, t.value_max, t.sample_count, t.lon,
               t.lat, t.raw_gid, t.model_id)
              IS DISTINCT FROM
              (EXCLUDED.label, EXCLUDED.unit, EXCLUDED.value, EXCLUDED.value_min,
               EXCLUDED.value_max, EXCLUDED.sample_count, EXCLUDED.lon, EXCLUDED.lat,
               EXCLUDED.raw_gid, EXCLUDED.model_id)
        RETURNING (xmax = 0) AS is_new
    )
    SELECT count(*) FILTER (WHERE is_new), count(*) FILTER (WHERE NOT is_new)
      INTO inserted, updated FROM merged;
    unchanged := staged - inserted - updated;
    DELETE FROM pg_temp.refined_stage;
END
$$;

-- ------------------------------------------------------------------------ last values
CREATE SCHEMA smartem_rt;

-- The newest value of every device and indicator, overwritten on each refresh (no
-- history). value_stale is 1 when the value is older than 2 hours at the refresh.
CREATE TABLE smartem_rt.last_device_output (
    gid         bigserial PRIMARY KEY,
    unique_id   text        NOT NULL,          -- '<device>-<name>'
    insert_time timestamptz NOT NULL DEFAULT now(),
    device_id   integer     NOT NULL,
    device_name text,
    name        text        NOT NULL,
    label       text        NOT NULL,
    unit        text        NOT NULL,
    time        timestamptz NOT NULL,          -- when the sample was taken
    value_raw   double precision,
    value_stale integer     NOT NULL DEFAULT 0 CHECK (value_stale IN (0, 1)),
    value       real        NOT NULL,
    altitude    integer     NOT NULL DEFAULT 0,
    lon         double precision,
    lat         double precision,
    UNIQUE (device_id, name)
);

-- All fresh last values, and one view per indicator (the seed's WMS/WFS layers).
CREATE VIEW smartem_rt.v_last_measurements AS
SELECT device_id, device_name, label, unit, name, value_raw, value_stale,
       time AS sample_time, value, lon, lat, gid, unique_id
  FROM smartem_rt.last_device_output
 WHERE value_stale = 0;

DO $$
DECLARE
    ind text;
BEGIN
    FOREACH ind IN ARRAY ARRAY['temperature', 'pressure', 'humidity', 'noiseavg',
                               'noiselevelavg', 'co2', 'co', 'no', 'no2', 'o3', 'coraw',
                               'noraw', 'no2raw', 'o3raw', 'pm10', 'pm2_5', 'pm1']
    LOOP
        EXECUTE format(
            'CREATE VIEW smartem_rt.%I AS SELECT * FROM smartem_rt.v_last_measurements'
            ' WHERE name = %L ORDER BY device_id, gid DESC',
            'v_last_measurements_' || ind, ind);
    END LOOP;
END
$$;
