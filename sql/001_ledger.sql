-- The file-chain ledger: what was collected, what was written, what was uploaded,
-- and an audit log of every step. Timestamps are timestamptz (UTC in, any zone out);
-- station-local standard time is derived from the station's fixed UTC offset.

CREATE SCHEMA IF NOT EXISTS stationflow;

-- A collected source piece (a LoggerNet file, a polled Modbus batch, a .ghg over FTP),
-- copied unmodified into the landing area. The same bytes from the same source are
-- registered once; a file that grew is a new fragment (new sha256).
CREATE TABLE stationflow.fragment (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    station       text        NOT NULL,
    source        text        NOT NULL,  -- e.g. 'loggernet:CR3000/Flux_CSIFormat', 'ftp:smartflux'
    source_path   text,                  -- where it was found (never modified there)
    path          text        NOT NULL,  -- immutable copy in the landing area
    size          bigint      NOT NULL CHECK (size >= 0),
    sha256        char(64)    NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    first_ts      timestamptz,
    last_ts       timestamptz,
    rows          integer     CHECK (rows >= 0),
    collected_at  timestamptz NOT NULL DEFAULT now(),
    status        text        NOT NULL DEFAULT 'collected'
                  CHECK (status IN ('collected', 'merged', 'superseded', 'quarantined')),
    message       text,                  -- why it was quarantined, if it was
    CONSTRAINT fragment_once UNIQUE (station, source, sha256),
    CONSTRAINT fragment_time_order CHECK (first_ts IS NULL OR last_ts IS NULL OR first_ts <= last_ts)
);
CREATE INDEX fragment_station_time ON stationflow.fragment (station, first_ts, last_ts);
CREATE INDEX fragment_status ON stationflow.fragment (status) WHERE status <> 'merged';

-- A file written for the ICOS ETC (one daily BM/ST/SAHEAT file, one EC/PHEN half-hour).
-- Late data re-opens a period: the same ETC name gets a new version with new bytes.
CREATE TABLE stationflow.output_file (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    station        text        NOT NULL,
    file_type      text        NOT NULL CHECK (file_type IN ('EC', 'BM', 'ST', 'SAHEAT', 'PHEN')),
    logger_number  smallint    NOT NULL CHECK (logger_number BETWEEN 1 AND 99),
    file_number    smallint    NOT NULL CHECK (file_number BETWEEN 1 AND 99),
    period_start   timestamptz NOT NULL,
    period_end     timestamptz NOT NULL,
    etc_name       text        NOT NULL,
    path           text        NOT NULL,
    size           bigint      NOT NULL CHECK (size >= 0),
    md5            char(32)    NOT NULL CHECK (md5 ~ '^[0-9a-f]{32}$'),
    sha256         char(64)    NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    rows_expected  integer     NOT NULL CHECK (rows_expected >= 0),
    rows_present   integer     NOT NULL CHECK (rows_present >= 0),
    rows_filled    integer     NOT NULL CHECK (rows_filled >= 0),
    interval_ms    integer     CHECK (interval_ms > 0),  -- 50 (20 Hz) .. 1800000 (30 min)
    version        integer     NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT output_file_period CHECK (period_start < period_end),
    CONSTRAINT output_file_rows CHECK (rows_present + rows_filled <= rows_expected),
    CONSTRAINT output_file_version UNIQUE (etc_name, version),
    -- identical bytes under the same name are the same version, never a new one
    CONSTRAINT output_file_same_bytes UNIQUE (etc_name, sha256)
);
CREATE INDEX output_file_station_period ON stationflow.output_file (station, period_start);

-- Which fragments went into which output file (the lineage shown in the completeness view).
CREATE TABLE stationflow.output_fragment (
    output_file_id bigint NOT NULL REFERENCES stationflow.output_file (id) ON DELETE CASCADE,
    fragment_id    bigint NOT NULL REFERENCES stationflow.fragment (id),
    PRIMARY KEY (output_file_id, fragment_id)
);

-- Every upload attempt of an output file to a target (an ICOS ETC endpoint).
CREATE TABLE stationflow.upload (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    output_file_id  bigint      NOT NULL REFERENCES stationflow.output_file (id),
    target          text        NOT NULL,  -- endpoint base URL (no credentials)
    attempt         integer     NOT NULL CHECK (attempt >= 1),
    outcome         text        NOT NULL
                    CHECK (outcome IN ('accepted', 'rejected', 'error', 'skipped')),
    http_status     smallint    CHECK (http_status BETWEEN 100 AND 599),  -- NULL: no answer
    receipt         text,
    message         text,
    at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT upload_attempt_once UNIQUE (output_file_id, target, attempt),
    CONSTRAINT upload_receipt_when_accepted CHECK (outcome <> 'accepted' OR receipt IS NOT NULL)
);
-- The same bytes are accepted by a target at most once: a second upload is refused here too.
CREATE UNIQUE INDEX upload_accepted_once ON stationflow.upload (output_file_id, target)
    WHERE outcome = 'accepted';

-- What happened, step by step, for people and for the completeness view.
CREATE TABLE stationflow.audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    dag_id      text,
    run_id      text,
    task_id     text,
    map_index   integer,
    try_number  integer,
    station     text,
    step        text        NOT NULL,
    level       text        NOT NULL DEFAULT 'INFO'
                CHECK (level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    message     text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_station_at ON stationflow.audit_log (station, at);
CREATE INDEX audit_log_run ON stationflow.audit_log (dag_id, run_id);
CREATE INDEX audit_log_problems ON stationflow.audit_log (at) WHERE level IN ('WARNING', 'ERROR', 'CRITICAL');
