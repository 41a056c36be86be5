-- Collection state of the file chain: what each scan saw, what each remote listing
-- offered, and the health of every device. Fragments themselves are in 001's ledger.

-- A file in a watched folder (LoggerNet output, a polled table, an FTP upload), as last
-- seen. A file is landed once it was seen with the same size and mtime for the settle
-- time; landed_* remember what was copied, so an unchanged file is never read again.
CREATE TABLE stationflow.source_file (
    station        text        NOT NULL,
    logger         text        NOT NULL,
    source_path    text        NOT NULL,
    size           bigint      NOT NULL CHECK (size >= 0),
    mtime_ns       bigint      NOT NULL,
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now(),
    landed_size    bigint,
    landed_mtime_ns bigint,
    fragment_id    bigint      REFERENCES stationflow.fragment (id),
    PRIMARY KEY (station, logger, source_path)
);

-- A file offered by a remote FTP server. (size, modify) identify a version: a listed
-- file whose version was fetched is never downloaded again.
CREATE TABLE stationflow.remote_file (
    station      text        NOT NULL,
    logger       text        NOT NULL,
    remote_path  text        NOT NULL,
    size         bigint      NOT NULL CHECK (size >= 0),
    modify       text        NOT NULL DEFAULT '',  -- the server's MLSD modify fact, if any
    fragment_id  bigint      NOT NULL REFERENCES stationflow.fragment (id),
    fetched_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station, logger, remote_path, size, modify)
);

-- Reachability of each device and the resets of its relay.
CREATE TABLE stationflow.device_health (
    station               text        NOT NULL,
    device                text        NOT NULL,
    status                text        NOT NULL DEFAULT 'unknown'
                          CHECK (status IN ('unknown', 'up', 'down', 'resetting', 'dead')),
    consecutive_failures  integer     NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    last_ok_at            timestamptz,
    last_failure_at       timestamptz,
    last_reset_at         timestamptz,
    resets                integer     NOT NULL DEFAULT 0 CHECK (resets >= 0),
    message               text,
    PRIMARY KEY (station, device)
);
