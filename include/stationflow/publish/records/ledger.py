"""What each publish target holds of the refined values (``smartem_publish.observation``,
sql/007), and which values it still needs.

A value is pending for a target when the target has no row for it, its row is not
``published``, or the refined revision moved on. That needs no resume number, so values
refined late or out of order are never skipped. Before a batch is sent its rows are marked
``sending`` and committed; after the server answered they are settled (``published`` with
the server's id, or ``failed``) in one transaction with the batch's audit rows. A crash in
between leaves ``sending`` rows: the next run asks the server what it holds of them before
sending anything, so nothing is created twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

Key = tuple[int, str, int, int]  # (device_id, indicator, day, hour)


class PublishRow(NamedTuple):
    """A refined value, and what the target's ledger row says of it (None: never sent)."""

    gid: int
    device_id: int
    device_type: str
    name: str
    label: str
    unit: str
    day: int
    hour: int
    time: datetime  # the end of the hour
    value: float
    value_min: float
    value_max: float
    sample_count: int
    lon: float | None
    lat: float | None
    model_id: int | None
    revision: int
    unique_id: str
    state: str | None
    sent_revision: int | None
    remote_id: Any

    @property
    def key(self) -> Key:
        return (self.device_id, self.name, self.day, self.hour)


@dataclass(frozen=True)
class Outcome:
    """What the server answered for one value: its id, or why it refused it."""

    key: Key
    revision: int
    remote_id: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


_SELECT = """
SELECT t.gid, t.device_id, t.device_type, t.name, t.label, t.unit, t.day, t.hour, t.time,
       t.value, t.value_min, t.value_max, t.sample_count, t.lon, t.lat, t.model_id,
       t.revision, t.unique_id, o.state, o.revision, o.remote_id
  FROM smartem_refined.timeseries t
  JOIN smartem_raw.timeseries r ON r.gid = t.raw_gid
  LEFT JOIN smartem_publish.observation o
         ON o.target = %(target)s AND o.device_id = t.device_id AND o.name = t.name
        AND o.day = t.day AND o.hour = t.hour
 WHERE r.harvester = ANY (%(harvesters)s) AND t.gid > %(after)s
"""


def pending(
    conn: psycopg.Connection,
    target: str,
    harvesters: Sequence[str],
    *,
    limit: int,
    after: int = 0,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[PublishRow]:
    """Refined values of these harvesters' devices the target needs, by gid after ``after``.
    With an interval (a replay) every value whose hour starts in [since, until) is returned,
    published or not, so the caller can check it against the server."""
    sql = _SELECT
    if since is not None and until is not None:
        sql += " AND t.time > %(since)s AND t.time <= %(until)s"
    else:
        sql += " AND (o.state IS DISTINCT FROM 'published' OR o.revision <> t.revision)"
    sql += " ORDER BY t.gid LIMIT %(limit)s"
    params = {"target": target, "harvesters": list(harvesters), "after": after,
              "since": since, "until": until, "limit": limit}  # fmt: skip
    return [PublishRow(*row) for row in conn.execute(sql, params)]


def mark_sending(conn: psycopg.Connection, target: str, rows: Iterable[PublishRow]) -> None:
    """Record that these values are about to be sent (commit it before sending). The id of
    an earlier version is kept: an update goes to it."""
    rows = list(rows)
    if not rows:
        return
    conn.execute(
        """
        INSERT INTO smartem_publish.observation AS o
               (target, device_id, name, day, hour, revision, state)
        SELECT %s, d, n, y, h, v, 'sending'
          FROM unnest(%s::int[], %s::text[], %s::int[], %s::int[], %s::int[]) AS u(d, n, y, h, v)
        ON CONFLICT (target, device_id, name, day, hour) DO UPDATE
           SET revision = EXCLUDED.revision, state = 'sending', attempts = o.attempts + 1,
               updated_at = now()
        """,
        (
            target,
            [r.device_id for r in rows],
            [r.name for r in rows],
            [r.day for r in rows],
            [r.hour for r in rows],
            [r.revision for r in rows],
        ),
    )


def settle(conn: psycopg.Connection, target: str, outcomes: Iterable[Outcome]) -> None:
    """Record the server's answers, in the caller's transaction."""
    with conn.cursor() as cur:
        cur.executemany(
            """
            UPDATE smartem_publish.observation
               SET state = CASE WHEN %(error)s::text IS NULL THEN 'published' ELSE 'failed' END,
                   remote_id = COALESCE(%(remote_id)s, remote_id),
                   revision = %(revision)s, error = %(error)s, updated_at = now(),
                   published_at = CASE WHEN %(error)s::text IS NULL THEN now()
                                       ELSE published_at END
             WHERE target = %(target)s AND device_id = %(d)s AND name = %(n)s
               AND day = %(y)s AND hour = %(h)s
            """,
            [
                {
                    "target": target,
                    "d": o.key[0],
                    "n": o.key[1],
                    "y": o.key[2],
                    "h": o.key[3],
                    "revision": o.revision,
                    "remote_id": None if o.remote_id is None else Jsonb(o.remote_id),
                    "error": o.error,
                }
                for o in outcomes
            ],
        )


def orphans(
    conn: psycopg.Connection,
    target: str,
    device_ids: Sequence[int],
    since: datetime,
    until: datetime,
) -> list[tuple[Key, Any]]:
    """Values the target holds whose refined value is gone (a re-refined hour no longer
    gives that indicator): (key, remote id) of those with an hour in [since, until)."""
    rows = conn.execute(
        """
        SELECT o.device_id, o.name, o.day, o.hour, o.remote_id
          FROM smartem_publish.observation o
         WHERE o.target = %s AND o.device_id = ANY (%s) AND o.remote_id IS NOT NULL
           AND (to_date(o.day::text, 'YYYYMMDD') + make_interval(hours => o.hour))
               AT TIME ZONE 'UTC' > %s
           AND (to_date(o.day::text, 'YYYYMMDD') + make_interval(hours => o.hour))
               AT TIME ZONE 'UTC' <= %s
           AND NOT EXISTS (SELECT 1 FROM smartem_refined.timeseries t
                            WHERE (t.device_id, t.name, t.day, t.hour)
                                = (o.device_id, o.name, o.day, o.hour))
        """,
        (target, list(device_ids), since, until),
    ).fetchall()
    return [((d, n, y, h), rid) for d, n, y, h, rid in rows]


def forget(conn: psycopg.Connection, target: str, keys: Iterable[Key]) -> None:
    """Drop the rows of values deleted from the server."""
    with conn.cursor() as cur:
        cur.executemany(
            "DELETE FROM smartem_publish.observation WHERE target = %s AND device_id = %s"
            " AND name = %s AND day = %s AND hour = %s",
            [(target, *k) for k in keys],
        )
