"""Data completeness, read from the ledger: what each station owes the ICOS ETC per day and
what became of it, and how many hours each sensor network harvested, refined and published.

The inventory says what is expected (``reconcile.expected_files``); the ledger
(``stationflow.file_status``, ``smartem_publish.hour_status``: sql/008) says what happened.
Plain functions over a psycopg connection, so the UI plugin stays a thin shell and all of
this is tested without a browser.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from stationflow.config import Inventory, Station
from stationflow.publish.icos_etc import IN_FLIGHT
from stationflow.publish.reconcile import Expected, expected_files
from stationflow.refine.daily import folder_of, stream_id

# What a file (or a stream's day) is, worst first: the order a day's cell takes its state in.
FAILED, MISSING, QUARANTINED, ASSEMBLED, PENDING, UPLOADED = (
    "failed",
    "missing",
    "quarantined",
    "assembled",
    "pending",
    "uploaded",
)
STATES = (FAILED, MISSING, QUARANTINED, ASSEMBLED, PENDING, UPLOADED)


@dataclass
class FileState:
    """One expected ETC file and what the ledger knows of it."""

    etc_name: str
    period_start: datetime
    deadline: datetime
    state: str
    output_file_id: int | None = None
    version: int | None = None
    fragments: int = 0
    rows_expected: int = 0
    rows_present: int = 0
    rows_filled: int = 0
    receipt: str | None = None
    reason: str | None = None  # why it failed, is missing or was quarantined


@dataclass
class StreamDay:
    """A stream's files of one ETC day (1 for BM/ST/SAHEAT, 48 half-hours for EC/PHEN)."""

    day: date
    files: list[FileState]
    quarantined: int = 0  # fragments of the day set aside as bad input

    def count(self, state: str) -> int:
        return sum(f.state == state for f in self.files)

    @property
    def state(self) -> str:
        if self.quarantined and not any(f.output_file_id for f in self.files):
            return QUARANTINED
        return min((f.state for f in self.files), key=STATES.index)

    @property
    def fragments(self) -> int:
        return sum(f.fragments for f in self.files)

    @property
    def rows_expected(self) -> int:
        return sum(f.rows_expected for f in self.files)

    @property
    def rows_present(self) -> int:
        return sum(f.rows_present for f in self.files)

    @property
    def rows_filled(self) -> int:
        return sum(f.rows_filled for f in self.files)

    @property
    def pct_filled(self) -> float | None:
        """Share of the assembled rows that are -9999 fill (None: nothing assembled)."""
        return 100.0 * self.rows_filled / self.rows_expected if self.rows_expected else None

    @property
    def reason(self) -> str | None:
        reasons = [f.reason for f in self.files if f.reason]
        same = [f.reason for f in self.files if f.reason and f.state == self.state]
        return (same or reasons or [None])[0]


@dataclass
class StreamRow:
    station: str
    stream: str  # 'BM_L01_F01'
    days: list[StreamDay]


@dataclass
class NetworkDay:
    day: date
    expected: int  # device-hours (devices x 24; today: the hours begun so far)
    harvested: int = 0
    refined: int = 0
    rejected: int = 0
    published: dict[str, int] = field(default_factory=dict)  # target -> hours fully published
    failed: dict[str, int] = field(default_factory=dict)  # target -> hours with a refused value


@dataclass
class NetworkRow:
    network: str
    targets: list[str]
    devices: int
    days: list[NetworkDay]


def day_window(end: date, days: int) -> list[date]:
    """``days`` days ending with ``end`` (included), oldest first."""
    return [end - timedelta(days=k) for k in range(days - 1, -1, -1)]


# ------------------------------------------------------------------------ ICOS files


def _file_state(e: Expected, row: dict[str, Any] | None, now: datetime) -> FileState:
    f = FileState(e.etc_name, e.period_start, e.deadline, MISSING if now >= e.deadline else PENDING)
    if row is None:
        if f.state == MISSING:
            f.reason = "never assembled"
        return f
    f.etc_name = row["etc_name"]
    f.output_file_id, f.version = row["output_file_id"], row["version"]
    f.fragments = row["fragments"]
    f.rows_expected, f.rows_present = row["rows_expected"], row["rows_present"]
    f.rows_filled, f.receipt = row["rows_filled"], row["receipt"]
    if row["receipt"] is not None:
        f.state = UPLOADED
    elif row["last_message"] == IN_FLIGHT:
        f.state = ASSEMBLED  # an upload is on its way (or its answer was lost: retried)
        f.reason = "upload sent, no answer yet"
    elif row["last_outcome"] in ("rejected", "error"):
        f.state = FAILED
        status = row["last_http_status"]
        f.reason = (f"HTTP {status}" if status else "no answer") + (
            f": {row['last_message']}" if row["last_message"] else ""
        )
    else:
        f.state = ASSEMBLED
        if row["last_outcome"] == "skipped":
            f.reason = f"upload skipped: {row['last_message']}"
    return f


def _landed(cur: psycopg.Cursor, station: Station, lo: datetime, hi: datetime) -> list[dict]:
    """The station's fragments in [lo, hi); one with no time (unreadable) at its arrival."""
    return cur.execute(
        "SELECT path, COALESCE(first_ts, collected_at) AS first_ts,"
        " COALESCE(last_ts, collected_at) AS last_ts, status, message"
        " FROM stationflow.fragment WHERE station = %s"
        " AND COALESCE(first_ts, collected_at) < %s AND COALESCE(last_ts, collected_at) >= %s",
        (station.id, hi, lo),
    ).fetchall()


def station_files(
    conn: psycopg.Connection,
    inv: Inventory,
    days: list[date],
    *,
    landing: Path,
    now: datetime | None = None,
) -> list[StreamRow]:
    """Per station and stream, per ETC day: the expected files and their state."""
    now = now or datetime.now(UTC)
    out: list[StreamRow] = []
    with conn.cursor(row_factory=dict_row) as cur:
        for st in inv.stations:
            expected = {d: expected_files(st, d) for d in days}
            every = [e for es in expected.values() for e in es]
            lo, hi = min(e.period_start for e in every), max(e.period_end for e in every)
            rows = {
                r["stem"]: r
                for r in cur.execute(
                    "SELECT * FROM stationflow.file_status WHERE station = %s"
                    " AND period_start >= %s AND period_start < %s",
                    (st.id, lo - timedelta(days=1), hi + timedelta(days=1)),
                )
            }
            landed = _landed(cur, st, lo, hi)
            for f in st.files:
                folder = f"{folder_of(landing, st, f)}/"
                mine = [r for r in landed if r["path"].startswith(folder)]
                cells = []
                for d in days:
                    es = [
                        e
                        for e in expected[d]
                        if (e.file_type, e.logger_number, e.file_number)
                        == (f.type, f.logger_number, f.file_number)
                    ]
                    cell = StreamDay(d, [_file_state(e, rows.get(e.stem), now) for e in es])
                    start, end = es[0].period_start, es[-1].period_end
                    day_frags = [r for r in mine if r["first_ts"] < end and r["last_ts"] >= start]
                    bad = [r for r in day_frags if r["status"] == "quarantined"]
                    cell.quarantined = len(bad)
                    if bad:
                        for fs in cell.files:
                            if fs.output_file_id is None:
                                fs.reason = f"quarantined: {bad[-1]['message']}"
                    if not any(fs.output_file_id for fs in cell.files):
                        # not assembled: say what did arrive
                        cell.files[0].fragments = len(day_frags) - len(bad)
                    cells.append(cell)
                out.append(StreamRow(st.id, stream_id(f), cells))
    return out


# ------------------------------------------------------------------ sensor networks


def network_hours(
    conn: psycopg.Connection, inv: Inventory, days: list[date], *, now: datetime | None = None
) -> list[NetworkRow]:
    """Per sensor network and UTC day: device-hours harvested, refined and published."""
    now = now or datetime.now(UTC)
    lo = datetime.combine(days[0], datetime.min.time(), UTC)
    hi = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), UTC)
    out = []
    for net in inv.sensor_networks:
        harvesters = [h.harvester for h in net.harvest]
        targets = [f"{t.kind}:{t.connection_id}" for t in net.publish]
        seen = conn.execute(
            "SELECT count(DISTINCT device_id) FROM smartem_raw.timeseries"
            " WHERE harvester = ANY(%s) AND hour_start >= %s AND hour_start < %s",
            (harvesters, lo, hi),
        ).fetchone()[0]
        devices = max(len(net.devices), seen)
        by_day = {}
        for d in days:
            begun = (now - datetime.combine(d, datetime.min.time(), UTC)) // timedelta(hours=1)
            by_day[int(d.strftime("%Y%m%d"))] = NetworkDay(d, devices * max(0, min(24, begun)))
        for day, hours, refined, rejected in conn.execute(
            "SELECT r.day, count(*), count(*) FILTER (WHERE s.status = 'refined'),"
            " count(*) FILTER (WHERE s.status = 'rejected')"
            " FROM smartem_raw.timeseries r LEFT JOIN smartem_refined.raw_state s"
            " ON s.raw_gid = r.gid AND s.raw_revision = r.revision"
            " WHERE r.harvester = ANY(%s) AND r.hour_start >= %s AND r.hour_start < %s"
            " GROUP BY r.day",
            (harvesters, lo, hi),
        ):
            if day in by_day:
                nd = by_day[day]
                nd.harvested, nd.refined, nd.rejected = hours, refined, rejected
        published: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
        for day, target, done, failed in conn.execute(
            "SELECT day, target,"
            " count(*) FILTER (WHERE refine_status = 'refined' AND published >= refined_values),"
            " count(*) FILTER (WHERE failed > 0)"
            " FROM smartem_publish.hour_status"
            " WHERE harvester = ANY(%s) AND hour_start >= %s AND hour_start < %s"
            " AND target = ANY(%s) GROUP BY day, target",
            (harvesters, lo, hi, targets),
        ):
            published[(day, target)] = [done, failed]
        for key, nd in by_day.items():
            nd.published = {t: published[(key, t)][0] for t in targets}
            nd.failed = {t: published[(key, t)][1] for t in targets}
        out.append(NetworkRow(net.id, targets, devices, list(by_day.values())))
    return out


# ---------------------------------------------------------------------- drill-down


def file_detail(conn: psycopg.Connection, output_file_id: int) -> dict[str, Any] | None:
    """One output file: its versions, fragments, upload attempts and audit log."""
    with conn.cursor(row_factory=dict_row) as cur:
        f = cur.execute(
            "SELECT * FROM stationflow.output_file WHERE id = %s", (output_file_id,)
        ).fetchone()
        if f is None:
            return None
        versions = cur.execute(
            "SELECT id, version, sha256, rows_present, rows_filled, created_at"
            " FROM stationflow.output_file WHERE station = %s"
            " AND regexp_replace(etc_name, '\\.[^.]*$', '') = %s ORDER BY version",
            (f["station"], f["etc_name"].rsplit(".", 1)[0]),
        ).fetchall()
        ids = [v["id"] for v in versions]
        fragments = cur.execute(
            "SELECT DISTINCT fr.id, fr.source, fr.source_path, fr.path, fr.size, fr.sha256,"
            " fr.rows, fr.first_ts, fr.last_ts, fr.status, fr.message"
            " FROM stationflow.fragment fr JOIN stationflow.output_fragment o"
            " ON o.fragment_id = fr.id WHERE o.output_file_id = ANY(%s) ORDER BY fr.id",
            (ids,),
        ).fetchall()
        uploads = cur.execute(
            "SELECT u.output_file_id, o.version, u.target, u.attempt, u.outcome, u.http_status,"
            " u.receipt, u.message, u.at FROM stationflow.upload u"
            " JOIN stationflow.output_file o ON o.id = u.output_file_id"
            " WHERE u.output_file_id = ANY(%s) ORDER BY u.at, u.attempt",
            (ids,),
        ).fetchall()
        audit = cur.execute(
            "SELECT id, at, level, step, message, dag_id, run_id, task_id, try_number"
            " FROM stationflow.audit_log WHERE station = %s AND ("
            " (details->>'output_file_id')::bigint = ANY(%s)"
            " OR (details->>'ledger_id')::bigint = ANY(%s)"
            " OR (details->>'fragment_id')::bigint = ANY(%s)"
            " OR position(%s in message) > 0) ORDER BY at, id",
            (
                f["station"],
                ids,
                ids,
                [fr["id"] for fr in fragments],
                f["etc_name"].rsplit(".", 1)[0],
            ),
        ).fetchall()
    return {
        "file": f,
        "versions": versions,
        "fragments": fragments,
        "uploads": uploads,
        "audit": audit,
    }


def day_audit(
    conn: psycopg.Connection, station: str, stream: str, day: date, limit: int = 200
) -> list[dict[str, Any]]:
    """Audit rows about a stream's day that made no file (e.g. nothing collected)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, at, level, step, message, dag_id, run_id, task_id, try_number"
            " FROM stationflow.audit_log WHERE station = %s AND position(%s in message) > 0"
            " ORDER BY at DESC, id DESC LIMIT %s",
            (station, f"{stream} of {day.isoformat()}", limit),
        ).fetchall()
