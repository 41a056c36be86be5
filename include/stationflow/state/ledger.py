"""Ledger writes for the file chain: fragments, output files (versioned) and their lineage.

An output and everything that describes it (its fragments, lineage, audit row) is committed
in one transaction. The same bytes under the same name are the same version, whatever the
number of runs; new bytes under that name are the next version.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_from_local_ns(ns: int, utc_offset_hours: float) -> datetime:
    """A local-standard-time clock reading (ns) as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=ns // 1000) - timedelta(hours=utc_offset_hours)


def upsert_fragment(
    conn: psycopg.Connection,
    *,
    station: str,
    source: str,
    path: str,
    size: int,
    sha256: str,
    first_ts: datetime | None = None,
    last_ts: datetime | None = None,
    rows: int | None = None,
    status: str = "collected",
    message: str | None = None,
    source_path: str | None = None,
) -> int:
    """Register a fragment once per (station, sha256) - whoever registers the bytes first
    (a collector, or refine given a file by hand) names their source; returns its id."""
    known = conn.execute(
        "SELECT id FROM stationflow.fragment WHERE station = %s AND sha256 = %s"
        " ORDER BY id LIMIT 1",
        (station, sha256),
    ).fetchone()
    if known is not None:
        if status == "quarantined":
            conn.execute(
                "UPDATE stationflow.fragment SET status = 'quarantined',"
                " message = COALESCE(%s, message) WHERE id = %s",
                (message, known[0]),
            )
        return known[0]
    row = conn.execute(
        "INSERT INTO stationflow.fragment (station, source, source_path, path, size, sha256,"
        " first_ts, last_ts, rows, status, message)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT ON CONSTRAINT fragment_once DO UPDATE SET status = EXCLUDED.status"
        " RETURNING id",
        (
            station,
            source,
            source_path,
            path,
            size,
            sha256,
            first_ts,
            last_ts,
            rows,
            status,
            message,
        ),
    ).fetchone()
    return row[0]


def record_output(
    conn: psycopg.Connection,
    o: dict[str, Any],
    *,
    fragment_ids: list[int],
    period_start: datetime,
    period_end: datetime,
) -> tuple[int, int, bool]:
    """Insert the output_file row unless these bytes are known; (id, version, is_new)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (o["name"],))
    known = conn.execute(
        "SELECT id, version FROM stationflow.output_file WHERE etc_name = %s AND sha256 = %s",
        (o["name"], o["sha256"]),
    ).fetchone()
    if known:
        return known[0], known[1], False
    version = conn.execute(
        "SELECT COALESCE(max(version), 0) + 1 FROM stationflow.output_file WHERE etc_name = %s",
        (o["name"],),
    ).fetchone()[0]
    out_id = conn.execute(
        "INSERT INTO stationflow.output_file (station, file_type, logger_number, file_number,"
        " period_start, period_end, etc_name, path, size, md5, sha256, rows_expected,"
        " rows_present, rows_filled, interval_ms, version)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            o["station"],
            o["type"],
            o["logger"],
            o["file"],
            period_start,
            period_end,
            o["name"],
            o["path"],
            o["size"],
            o["md5"],
            o["sha256"],
            o["rows_expected"],
            o["rows_present"],
            o["rows_filled"],
            round(o["interval_s"] * 1000) or None,
            version,
        ),
    ).fetchone()[0]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO stationflow.output_fragment (output_file_id, fragment_id)"
            " VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(out_id, f) for f in fragment_ids],
        )
    return out_id, version, True
