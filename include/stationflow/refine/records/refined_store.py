"""The refined table of the record chain and the refiner's progress, written together.

Which raw hours need refining is read from the raw table against
``smartem_refined.raw_state``: an hour is pending when it was never refined or its
revision moved on (late data). That needs no resume number, so raw hours committed late,
out of their change order, are never skipped. A batch is one transaction: its values are
merged (new added, changed replaced, identical untouched; values the hour no longer gives
deleted) and its raw_state rows written, so a crash leaves neither behind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql as pgsql

from stationflow.refine.records.refiner import RefineResult
from stationflow.refine.records.samples import RawRecord
from stationflow.refine.records.stored_columns import current_keys

_COLUMNS = (
    "unique_id", "device_id", "device_type", "name", "label", "unit", "day", "hour", "time",
    "value", "value_min", "value_max", "sample_count", "lon", "lat", "raw_gid", "model_id",
)  # fmt: skip
_COPY_STAGE = pgsql.SQL("COPY refined_stage ({}) FROM STDIN").format(
    pgsql.SQL(", ").join(pgsql.Identifier(c) for c in _COLUMNS)
)
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS refined_stage
    (LIKE smartem_refined.timeseries INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
# The JSON text only for hours without a usable sample-column set (sql/006).
_SELECT = """
SELECT r.gid, r.revision, r.device_id, r.day, r.hour, r.device_type,
       CASE WHEN c.raw_gid IS NULL THEN r.data::text END, c.body
  FROM smartem_raw.timeseries r
  LEFT JOIN smartem_refined.raw_state s ON s.raw_gid = r.gid
  LEFT JOIN smartem_raw.sample_columns c ON c.raw_gid = r.gid
        AND c.content_hash = r.content_hash AND c.fields_key = ANY (%(keys)s)
 WHERE r.harvester = ANY (%(harvesters)s) AND r.gid > %(after)s
"""


@dataclass(frozen=True)
class WriteResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    refined: int = 0  # raw hours
    rejected: int = 0


def pending(
    conn: psycopg.Connection,
    harvesters: Sequence[str],
    *,
    limit: int,
    after: int = 0,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[RawRecord]:
    """Raw hours of these harvesters to refine, by raw gid after ``after``. With an
    interval [since, until) (a replay) every hour in it is returned, refined or not;
    without, only those never refined or changed since."""
    sql = _SELECT
    if since is not None and until is not None:
        sql += " AND r.hour_start >= %(since)s AND r.hour_start < %(until)s"
    else:
        sql += " AND (s.raw_gid IS NULL OR s.raw_revision <> r.revision)"
    sql += " ORDER BY r.gid LIMIT %(limit)s"
    params = {"harvesters": list(harvesters), "after": after, "since": since,
              "until": until, "limit": limit, "keys": current_keys()}  # fmt: skip
    return [
        RawRecord(d, day, h, text, t, gid, rev, None if body is None else bytes(body))
        for gid, rev, d, day, h, t, text, body in conn.execute(sql, params)
    ]


def write(
    conn: psycopg.Connection,
    records: Sequence[RawRecord],
    result: RefineResult,
    names: Sequence[str],
) -> WriteResult:
    """Merge a refined batch and mark its raw hours refined (or rejected), in the caller's
    transaction. ``names``: the indicators that were refined (values of other indicators
    are left alone)."""
    conn.execute(_STAGE)
    with conn.cursor().copy(_COPY_STAGE) as cp:
        for r in result.rows:
            cp.write_row((
                f"{r.device_id}-{r.day}-{r.hour}-{r.name}", r.device_id, r.device_type, r.name,
                r.label, r.unit, r.day, r.hour, r.time, r.value, r.value_min, r.value_max,
                r.sample_count, r.lon, r.lat, r.raw_gid, r.model_id,
            ))  # fmt: skip
    rejected = {rec.gid: why for rec, why in result.rejected}
    refined_gids = [r.gid for r in records if r.gid not in rejected]
    inserted, updated, unchanged, deleted = conn.execute(
        "SELECT * FROM smartem_refined.merge_stage(%s, %s)", (refined_gids, list(names))
    ).fetchone()
    rows = Counter(r.raw_gid for r in result.rows)
    bad = Counter()
    for (uid, _field, _reason), n in result.bad_samples.items():
        bad[uid] += n
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO smartem_refined.raw_state"
            " (raw_gid, raw_revision, status, rows, samples, bad_values, error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (raw_gid) DO UPDATE SET raw_revision = EXCLUDED.raw_revision,"
            " status = EXCLUDED.status, rows = EXCLUDED.rows, samples = EXCLUDED.samples,"
            " bad_values = EXCLUDED.bad_values, error = EXCLUDED.error, refined_at = now()",
            [
                (
                    r.gid, r.revision, "rejected" if r.gid in rejected else "refined",
                    rows[r.gid], result.samples.get(r.unique_id, 0), bad[r.unique_id],
                    rejected.get(r.gid),
                )
                for r in records
            ],
        )  # fmt: skip
    return WriteResult(inserted, updated, unchanged, deleted,
                       len(records) - len(rejected), len(rejected))  # fmt: skip
