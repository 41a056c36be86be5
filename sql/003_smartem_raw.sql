-- Smart Emission record chain, collect: raw sensor hours exactly as the harvesters got them
-- (seed 001, 4.2.1), with the harvesters' sync-state kept by a trigger so that it only
-- moves when the data it describes is committed (seed 001, 4.1.3).

CREATE SCHEMA smartem_raw;

-- Every change to a raw hour takes the next number: the refiner resumes from the last
-- number it processed, so a late-data update of an old hour is refined again.
CREATE SEQUENCE smartem_raw.change_seq;

-- One row per device-hour. Hour h of day d covers (h-1):00-(h-1):59 UTC, as in the Whale
-- API. `data` is the peer's document verbatim (json, not jsonb: the text is kept as
-- received); content_hash is the sha256 of that text, so a re-check stores only changes.
CREATE TABLE smartem_raw.timeseries (
    gid            bigserial PRIMARY KEY,
    unique_id      text        NOT NULL,       -- '<device>-<yyyymmdd>-<h>', as the original
    insert_time    timestamptz NOT NULL DEFAULT now(),
    update_time    timestamptz NOT NULL DEFAULT now(),
    device_id      integer     NOT NULL,
    day            integer     NOT NULL CHECK (day BETWEEN 19700101 AND 29991231),
    hour           integer     NOT NULL CHECK (hour BETWEEN 1 AND 24),
    hour_start     timestamptz NOT NULL,
    data           json        NOT NULL,
    content_hash   char(64)    NOT NULL,
    sample_count   integer     NOT NULL CHECK (sample_count >= 0),
    complete       boolean     NOT NULL DEFAULT false,  -- the hour had ended when fetched
    device_type    text        NOT NULL DEFAULT 'jose',
    device_version text        NOT NULL DEFAULT '1',
    harvester      text        NOT NULL,       -- '<kind>:<connection id>'
    revision       integer     NOT NULL DEFAULT 1,  -- 1 + times the content changed
    change_seq     bigint      NOT NULL DEFAULT nextval('smartem_raw.change_seq'),
    lon            double precision,
    lat            double precision,
    UNIQUE (device_id, day, hour)
);
CREATE INDEX timeseries_change_seq ON smartem_raw.timeseries (change_seq);
CREATE INDEX timeseries_hour_start ON smartem_raw.timeseries (hour_start);

-- Geometry only where PostGIS is installed; lon/lat are always there.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'postgis') THEN
        CREATE EXTENSION IF NOT EXISTS postgis;
        EXECUTE 'ALTER TABLE smartem_raw.timeseries ADD COLUMN point geometry(Point, 4326)'
                ' GENERATED ALWAYS AS (CASE WHEN lon IS NOT NULL AND lat IS NOT NULL'
                ' THEN ST_SetSRID(ST_MakePoint(lon, lat), 4326) END) STORED';
    END IF;
END
$$;

-- The sync-state of each harvester per device: the newest hour committed and when.
-- Written only by the trigger below, in the transaction that writes the hours.
CREATE TABLE smartem_raw.harvester_progress (
    harvester    text        NOT NULL,
    device_id    integer     NOT NULL,
    last_day     integer     NOT NULL,
    last_hour    integer     NOT NULL,
    last_start   timestamptz NOT NULL,    -- start of the newest committed hour
    hours_stored bigint      NOT NULL DEFAULT 0,
    hours_changed bigint     NOT NULL DEFAULT 0,  -- late-data updates of stored hours
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (harvester, device_id)
);

CREATE FUNCTION smartem_raw.track_progress() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO smartem_raw.harvester_progress AS p
        (harvester, device_id, last_day, last_hour, last_start, hours_stored, hours_changed)
    SELECT DISTINCT ON (harvester, device_id)
           harvester, device_id, day, hour, hour_start,
           CASE WHEN TG_OP = 'INSERT' THEN count(*) OVER w ELSE 0 END,
           CASE WHEN TG_OP = 'UPDATE' THEN count(*) OVER w ELSE 0 END
      FROM changed
    WINDOW w AS (PARTITION BY harvester, device_id)
     ORDER BY harvester, device_id, hour_start DESC
    ON CONFLICT (harvester, device_id) DO UPDATE SET
        last_day   = CASE WHEN EXCLUDED.last_start > p.last_start
                          THEN EXCLUDED.last_day ELSE p.last_day END,
        last_hour  = CASE WHEN EXCLUDED.last_start > p.last_start
                          THEN EXCLUDED.last_hour ELSE p.last_hour END,
        last_start = GREATEST(p.last_start, EXCLUDED.last_start),
        hours_stored  = p.hours_stored + EXCLUDED.hours_stored,
        hours_changed = p.hours_changed + EXCLUDED.hours_changed,
        updated_at = now();
    RETURN NULL;
END
$$;

CREATE TRIGGER timeseries_progress_insert
    AFTER INSERT ON smartem_raw.timeseries
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION smartem_raw.track_progress();

CREATE TRIGGER timeseries_progress_update
    AFTER UPDATE ON smartem_raw.timeseries
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION smartem_raw.track_progress();

-- What a peer sent that could not be stored as a raw hour (not JSON, wrong shape, wrong
-- device or hour): the original bytes and the reason, once per distinct body.
CREATE TABLE smartem_raw.quarantine (
    id          bigserial PRIMARY KEY,
    harvester   text        NOT NULL,
    device_id   integer     NOT NULL,
    day         integer     NOT NULL,
    hour        integer     NOT NULL,
    source      text        NOT NULL,     -- the URL or query it came from
    error       text        NOT NULL,
    body        bytea       NOT NULL,
    sha256      char(64)    NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (harvester, device_id, day, hour, sha256)
);

-- Merge a harvester's batch, staged by COPY in the session's temporary table raw_stage
-- (LIKE smartem_raw.timeseries): new hours are added, hours whose content changed are
-- replaced (a new revision and change number), identical hours are left alone.
CREATE FUNCTION smartem_raw.merge_stage(OUT inserted bigint, OUT updated bigint,
                                        OUT unchanged bigint)
LANGUAGE plpgsql AS $$
DECLARE
    staged bigint;
BEGIN
    SELECT count(*) INTO staged FROM pg_temp.raw_stage;
    WITH merged AS (
        INSERT INTO smartem_raw.timeseries AS t
            (unique_id, device_id, day, hour, hour_start, data, content_hash, sample_count,
             complete, device_type, device_version, harvester, lon, lat)
        SELECT unique_id, device_id, day, hour, hour_start, data, content_hash, sample_count,
               complete, device_type, device_version, harvester, lon, lat
          FROM pg_temp.raw_stage
        ON CONFLICT (device_id, day, hour) DO UPDATE SET
            unique_id = EXCLUDED.unique_id,
            data = EXCLUDED.data,
            content_hash = EXCLUDED.content_hash,
            sample_count = EXCLUDED.sample_count,
            complete = EXCLUDED.complete,
            device_type = EXCLUDED.device_type,
            device_version = EXCLUDED.device_version,
            harvester = EXCLUDED.harvester,
            lon = EXCLUDED.lon,
            lat = EXCLUDED.lat,
            update_time = now(),
            revision = t.revision + 1,
            change_seq = nextval('smartem_raw.change_seq')
        WHERE t.content_hash <> EXCLUDED.content_hash
        RETURNING (xmax = 0) AS is_new
    )
    SELECT count(*) FILTER (WHERE is_new), count(*) FILTER (WHERE NOT is_new)
      INTO inserted, updated FROM merged;
    unchanged := staged - inserted - updated;
    DELETE FROM pg_temp.raw_stage;
END
$$;
