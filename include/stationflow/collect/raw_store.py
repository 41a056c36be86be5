"""The raw table of the record chain: device-hours as the peer sent them, written in batches.

A batch is one transaction: COPY into a temporary table, then smartem_raw.merge_stage()
adds new hours and replaces hours whose content changed (late data), leaving identical
hours untouched. The progress trigger (sql/003) moves in that same transaction, so a crash
anywhere before the commit leaves neither data nor progress behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql as pgsql

from stationflow.refine.records.samples import RawRecord, RecordError
from stationflow.refine.records.stored_columns import current_keys, extract

# Columns COPY stages; smartem_raw.merge_stage() (sql/003) merges them into the table.
_COLUMNS = (
    "unique_id",
    "device_id",
    "day",
    "hour",
    "hour_start",
    "data",
    "content_hash",
    "sample_count",
    "complete",
    "device_type",
    "device_version",
    "harvester",
    "lon",
    "lat",
)
_COPY_STAGE = pgsql.SQL("COPY raw_stage ({}) FROM STDIN").format(
    pgsql.SQL(", ").join(pgsql.Identifier(c) for c in _COLUMNS)
)
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS raw_stage
    (LIKE smartem_raw.timeseries INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
_COLUMNS_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS columns_stage (device_id integer, day integer, hour integer,
    content_hash text, fields_key text, body bytea) ON COMMIT DELETE ROWS
"""


def hour_start(day: int, hour: int) -> datetime:
    """Start (UTC) of hour ``hour`` (1..24) of ``day`` (yyyymmdd): hour 1 is 00:00-00:59."""
    if not 1 <= hour <= 24:
        raise ValueError(f"hour {hour} is outside 1..24")
    d = date(day // 10000, day // 100 % 100, day % 100)
    return datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(hours=hour - 1)


def day_hour(start: datetime) -> tuple[int, int]:
    """The (yyyymmdd, 1..24) of the hour starting at ``start`` (UTC)."""
    start = start.astimezone(UTC)
    return start.year * 10000 + start.month * 100 + start.day, start.hour + 1


@dataclass(frozen=True)
class RawHour:
    """One device-hour as received: ``body`` is the peer's JSON document, byte for byte."""

    device_id: int
    day: int
    hour: int
    body: bytes
    sample_count: int
    harvester: str
    device_type: str = "jose"
    device_version: str = "1"
    lon: float | None = None
    lat: float | None = None
    complete: bool = True
    content_hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_hash", hashlib.sha256(self.body).hexdigest())

    @property
    def unique_id(self) -> str:
        return f"{self.device_id}-{self.day}-{self.hour}"

    @property
    def start(self) -> datetime:
        return hour_start(self.day, self.hour)

    def row(self) -> tuple:
        return (
            self.unique_id,
            self.device_id,
            self.day,
            self.hour,
            self.start,
            self.body.decode("utf-8"),
            self.content_hash,
            self.sample_count,
            self.complete,
            self.device_type,
            self.device_version,
            self.harvester,
            self.lon,
            self.lat,
        )


@dataclass(frozen=True)
class Rejected:
    """What a peer sent for a device-hour that cannot be stored: kept with the reason."""

    harvester: str
    device_id: int
    day: int
    hour: int
    source: str
    error: str
    body: bytes


@dataclass
class WriteResult:
    inserted: int = 0
    updated: int = 0  # stored hours whose content changed
    unchanged: int = 0
    quarantined: int = 0

    def add(self, other: WriteResult) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.quarantined += other.quarantined


def write_batch(
    conn: psycopg.Connection, hours: Sequence[RawHour], rejected: Iterable[Rejected] = ()
) -> WriteResult:
    """Store one batch in one transaction (the caller's, if one is open)."""
    result = WriteResult()
    with conn.transaction():
        if hours:
            conn.execute(_STAGE)
            staged = _last_per_key(hours)
            with conn.cursor().copy(_COPY_STAGE) as cp:
                for h in staged:
                    cp.write_row(h.row())
            need = _without_columns(conn, staged)
            merged = conn.execute("SELECT * FROM smartem_raw.merge_stage()").fetchone()
            _store_columns(conn, need)
            result.inserted, result.updated, result.unchanged = merged
            result.unchanged += len(hours) - sum(merged)  # the same hour twice in one batch
        for r in rejected:
            result.quarantined += quarantine(conn, r)
    return result


def _without_columns(conn: psycopg.Connection, staged: Sequence[RawHour]) -> list[RawHour]:
    """The staged hours whose stored row has no usable sample-column set (new, changed, or
    stored before sets or under another field list): only these are extracted."""
    keys = {
        tuple(k)
        for k in conn.execute(
            "SELECT * FROM smartem_raw.stage_without_columns(%s)", (current_keys(),)
        )
    }
    return [h for h in staged if (h.device_id, h.day, h.hour) in keys]


def _store_columns(conn: psycopg.Connection, hours: Sequence[RawHour]) -> None:
    """Each hour's samples as columns, in the batch's transaction. An hour that is no raw
    hour gets no set: the refiner reads its JSON and rejects it with the reason."""
    rows = []
    for h in hours:
        try:
            key, body = extract(RawRecord(h.device_id, h.day, h.hour, h.body, h.device_type))
        except (RecordError, KeyError):
            continue
        rows.append((h.device_id, h.day, h.hour, h.content_hash, key, body))
    if not rows:
        return
    conn.execute(_COLUMNS_STAGE)
    with conn.cursor().copy(
        "COPY columns_stage (device_id, day, hour, content_hash, fields_key, body) FROM STDIN"
    ) as cp:
        for row in rows:
            cp.write_row(row)
    conn.execute("SELECT smartem_raw.merge_columns()")


def _last_per_key(hours: Sequence[RawHour]) -> list[RawHour]:
    """One row per device-hour (ON CONFLICT cannot touch a row twice): the last one wins."""
    by_key = {(h.device_id, h.day, h.hour): h for h in hours}
    return list(by_key.values())


def quarantine(conn: psycopg.Connection, r: Rejected) -> int:
    """Keep a rejected body once per distinct content; 1 when it is new."""
    cur = conn.execute(
        "INSERT INTO smartem_raw.quarantine"
        " (harvester, device_id, day, hour, source, error, body, sha256)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (harvester, device_id, day, hour, sha256) DO NOTHING",
        (
            r.harvester,
            r.device_id,
            r.day,
            r.hour,
            r.source,
            r.error,
            r.body,
            hashlib.sha256(r.body).hexdigest(),
        ),
    )
    return cur.rowcount


def progress(conn: psycopg.Connection, harvester: str) -> dict[int, datetime]:
    """Start of the newest committed hour per device of ``harvester``."""
    rows = conn.execute(
        "SELECT device_id, last_start FROM smartem_raw.harvester_progress WHERE harvester = %s",
        (harvester,),
    )
    return {device: start for device, start in rows}
