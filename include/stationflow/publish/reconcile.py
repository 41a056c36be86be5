"""The daily reconciliation: every file a station owes the ICOS ETC, accepted by its deadline?

Task callbacks do not run when a task is hard-killed, and a half-hour whose source produced
no data makes no file at all, so neither ever raises an alert. This check starts from the
inventory instead: every stream of every station, every ETC day, every expected file
(``expected_files``), looked up in the ledger by name. A file whose deadline has passed
without an accepted upload is missing, with what the ledger knows of it:

- ``not_assembled``: no output file by that name (no data, assembly failed or never ran);
- ``not_uploaded``: assembled, no upload attempt of its latest version;
- ``rejected`` / ``error`` / ``skipped``: the latest version's last attempt, with its
  HTTP status and message.

Names are matched without their extension: the inventory's ``extension`` and the one the
assembler chose may differ, the file is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

from stationflow.alerts import alert_channels, send_alert
from stationflow.config import Inventory, Station
from stationflow.formats.etc_names import EtcName
from stationflow.state.audit import RunIds, audit

log = logging.getLogger("stationflow.reconcile")

HALF_HOUR = timedelta(minutes=30)
NOT_ASSEMBLED, NOT_UPLOADED = "not_assembled", "not_uploaded"
REJECTED, ERROR, SKIPPED = "rejected", "error", "skipped"
STATES = (NOT_ASSEMBLED, NOT_UPLOADED, REJECTED, ERROR, SKIPPED)


@dataclass(frozen=True)
class Expected:
    """One file a station owes the ETC: its name, period (UTC) and deadline (UTC)."""

    station: str
    file_type: str
    logger_number: int
    file_number: int
    etc_name: str
    period_start: datetime
    period_end: datetime
    deadline: datetime

    @property
    def stem(self) -> str:
        """The name without its extension (what the ledger is matched on)."""
        return self.etc_name.rsplit(".", 1)[0]

    @property
    def stream(self) -> str:
        return f"{self.file_type} L{self.logger_number:02d}_F{self.file_number:02d}"


def expected_files(station: Station, day: date) -> list[Expected]:
    """Every file of ``station`` for ETC ``day`` (a local-standard-time day), stream by stream.

    A daily stream (BM, ST, SAHEAT) owes one file named by the day; a half-hourly one (EC,
    PHEN) 48, each named by the END of its half-hour (the last one is ``0000`` of the next
    day). Deadline: the period's end (local standard time, as UTC) plus
    ``upload.deadline_hours``.
    """
    midnight = datetime.combine(day, time(0))  # naive local standard time, as in the names
    grace = timedelta(hours=station.upload.deadline_hours)
    out = []
    for f in station.files:
        if f.half_hourly:
            periods = [
                (midnight + k * HALF_HOUR, midnight + (k + 1) * HALF_HOUR) for k in range(48)
            ]
        else:
            periods = [(midnight, midnight + timedelta(days=1))]
        for start, end in periods:
            name_time = end if f.half_hourly else start
            name = EtcName(
                station.id, f.type, name_time, f.logger_number, f.file_number, f.extension
            )
            start_utc = start.replace(tzinfo=station.tz).astimezone(UTC)
            end_utc = end.replace(tzinfo=station.tz).astimezone(UTC)
            out.append(
                Expected(
                    station=station.id,
                    file_type=f.type,
                    logger_number=f.logger_number,
                    file_number=f.file_number,
                    etc_name=str(name),
                    period_start=start_utc,
                    period_end=end_utc,
                    deadline=end_utc + grace,
                )
            )
    return out


def etc_days(station: Station, now: datetime, days: int) -> list[date]:
    """The last ``days`` complete ETC days before ``now``'s local date, oldest first."""
    today = now.astimezone(station.tz).date()
    return [today - timedelta(days=k) for k in range(days, 0, -1)]


# ------------------------------------------------------------------------- ledger


_LEDGER = """
SELECT o.id, o.etc_name, o.version, u.id, u.outcome, u.http_status, u.message, u.at
FROM stationflow.output_file o
LEFT JOIN stationflow.upload u ON u.output_file_id = o.id
WHERE o.station = %(station)s
  AND o.period_start >= %(lo)s AND o.period_start < %(hi)s
  AND regexp_replace(o.etc_name, '\\.[^.]*$', '') = ANY(%(stems)s)
"""


@dataclass
class _Known:
    """What the ledger holds under one name: its versions and their upload attempts."""

    versions: dict[int, tuple[int, str]]  # output_file id -> (version, etc_name)
    attempts: list[tuple[datetime, int, int, str, int | None, str | None]]
    accepted: bool = False


def _ledger(conn: psycopg.Connection, station: str, files: list[Expected]) -> dict[str, _Known]:
    known: dict[str, _Known] = {}
    if not files:
        return known
    rows = conn.execute(
        _LEDGER,
        {
            "station": station,
            # a wide margin: the names decide, the period only keeps the scan small
            "lo": min(e.period_start for e in files) - timedelta(days=1),
            "hi": max(e.period_end for e in files) + timedelta(days=1),
            "stems": sorted({e.stem for e in files}),
        },
    ).fetchall()
    for oid, name, version, uid, outcome, status, message, at in rows:
        k = known.setdefault(name.rsplit(".", 1)[0], _Known({}, []))
        k.versions[oid] = (version, name)
        if outcome is not None:
            k.attempts.append((at, uid, oid, outcome, status, message))
            k.accepted |= outcome == "accepted"
    return known


def _missing(e: Expected, k: _Known | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "etc_name": e.etc_name,
        "stream": e.stream,
        "period_start": e.period_start.isoformat(),
        "period_end": e.period_end.isoformat(),
        "deadline": e.deadline.isoformat(),
        "state": NOT_ASSEMBLED,
        "version": None,
        "attempts": 0,
        "http_status": None,
        "message": None,
        "at": None,
    }
    if k is None:
        return entry
    latest = max(k.versions, key=lambda oid: k.versions[oid][0])
    tries = sorted(a for a in k.attempts if a[2] == latest)
    entry.update(
        etc_name=k.versions[latest][1], version=k.versions[latest][0], attempts=len(k.attempts)
    )
    if not tries:
        entry["state"] = NOT_UPLOADED
        return entry
    at, _, _, outcome, status, message = tries[-1]
    entry.update(state=outcome, http_status=status, message=message, at=at.isoformat())
    return entry


def state_text(entry: dict[str, Any]) -> str:
    """What happened to a missing file, for people."""
    state, status, message = entry["state"], entry.get("http_status"), entry.get("message")
    answer = f"HTTP {status}" if status else "no answer"
    answer += f": {message}" if message else ""
    if state == NOT_ASSEMBLED:
        return "never assembled"
    if state == NOT_UPLOADED:
        return f"assembled (version {entry.get('version')}), not uploaded"
    if state == REJECTED:
        return f"last upload rejected ({answer})"
    if state == ERROR:
        return f"last upload failed ({answer})"
    return f"last upload skipped ({message or 'no reason given'})"


# ------------------------------------------------------------------------- report


def _lines(missing: list[dict[str, Any]]) -> Iterable[str]:
    """One line per file; runs of consecutive half-hours in the same state on one line."""
    i = 0
    while i < len(missing):
        j, text = i, state_text(missing[i])
        while (
            j + 1 < len(missing)
            and missing[j + 1]["stream"] == missing[i]["stream"]
            and missing[j + 1]["period_start"] == missing[j]["period_end"]
            and state_text(missing[j + 1]) == text
        ):
            j += 1
        if j - i >= 2:
            first, last = missing[i]["etc_name"], missing[j]["etc_name"]
            yield f"  {first} .. {last} ({j - i + 1} files): {text}"
        else:
            yield from (f"  {m['etc_name']}: {text}" for m in missing[i : j + 1])
        i = j + 1


def _alert(summary: dict[str, Any], now: datetime) -> tuple[str, str]:
    per = {s: len(r["missing"]) for s, r in summary["stations"].items() if r["missing"]}
    total = sum(per.values())
    counts = ", ".join(f"{s}: {n}" for s, n in per.items())
    subject = (
        f"[stationflow] {total} ICOS file{'s' if total != 1 else ''} not accepted"
        f" by their deadline ({counts})"
    )
    lines = [
        f"{total} file{'s' if total != 1 else ''} due by {now:%Y-%m-%d %H:%M} UTC"
        " have no accepted upload at the ICOS Carbon Portal.",
    ]
    for s in per:
        r = summary["stations"][s]
        lines += [
            "",
            f"{s}: {len(r['missing'])} of {r['due']} files due missing"
            f" (ETC days {', '.join(r['days'])}, local standard time)",
            *_lines(r["missing"]),
        ]
    return subject, "\n".join(lines)


def _station_message(s: str, r: dict[str, Any]) -> str:
    if not r["missing"]:
        return (
            f"{s}: all {r['due']} files due were accepted"
            f" ({r['pending']} not due yet; ETC days {', '.join(r['days'])})"
        )
    by_state: dict[str, int] = {}
    for m in r["missing"]:
        by_state[m["state"]] = by_state.get(m["state"], 0) + 1
    states = ", ".join(f"{n} {st.replace('_', ' ')}" for st, n in by_state.items())
    return (
        f"{s}: {len(r['missing'])} of {r['due']} files due not accepted ({states});"
        f" ETC days {', '.join(r['days'])}"
    )


def reconcile(
    conn: psycopg.Connection,
    inventory: Inventory,
    *,
    now: datetime,
    days: int = 2,
    ids: RunIds | None = None,
) -> dict[str, Any]:
    """Check the last ``days`` complete ETC days of every station against the ledger.

    Every expected file whose deadline has passed (``deadline <= now``) and which has no
    accepted upload under its name (any version) is missing. Writes one audit row per
    station (``step='reconcile'``, WARNING listing the missing files, or INFO), in the
    caller's transaction; sends ONE alert for the whole run when anything is missing
    (``send_alert``: mail and/or webhook), none when all is in. Never touches the ledger
    itself: running it again writes new audit rows and sends the alert again.

    Coverage: a day is checked by the runs of the ``days`` days after it, so with a daily
    run and ``days=2`` every file is checked after its deadline when ``deadline_hours <= 24``
    (more generally when ``(days - 1) * 24 + run hour >= deadline_hours``).

    Returns ``{"now", "missing": n, "stations": {id: {"days", "expected", "due",
    "accepted", "pending", "missing": [entry...]}}, "alert": [channels sent],
    "alert_failed": [channels that failed]}``.
    """
    if now.tzinfo is None:
        raise ValueError("reconcile: `now` must be timezone-aware")
    if days < 1:
        raise ValueError("reconcile: `days` must be at least 1")
    summary: dict[str, Any] = {
        "now": now.astimezone(UTC).isoformat(),
        "missing": 0,
        "stations": {},
        "alert": [],
        "alert_failed": [],
    }
    for station in inventory.stations:
        day_list = etc_days(station, now, days)
        order = {(f.type, f.logger_number, f.file_number): i for i, f in enumerate(station.files)}
        files = sorted(
            (e for d in day_list for e in expected_files(station, d)),
            key=lambda e: (order[e.file_type, e.logger_number, e.file_number], e.period_start),
        )
        known = _ledger(conn, station.id, files)
        accepted = [e for e in files if (k := known.get(e.stem)) is not None and k.accepted]
        done = {e.etc_name for e in accepted}
        due = [e for e in files if e.deadline <= now]
        missing = [_missing(e, known.get(e.stem)) for e in due if e.etc_name not in done]
        summary["stations"][station.id] = {
            "days": [d.isoformat() for d in day_list],
            "expected": len(files),
            "due": len(due),
            "accepted": len(accepted),
            "pending": sum(1 for e in files if e.deadline > now and e.etc_name not in done),
            "missing": missing,
        }
        summary["missing"] += len(missing)

    if summary["missing"]:
        subject, body = _alert(summary, now)
        files_out = [
            {"station": s, **{k: m[k] for k in ("etc_name", "state", "http_status", "message")}}
            for s, r in summary["stations"].items()
            for m in r["missing"]
        ]
        stations = [s for s, r in summary["stations"].items() if r["missing"]]
        summary["alert"] = send_alert(
            inventory,
            subject,
            body,
            fields={
                "kind": "reconcile",
                "station": ", ".join(stations),
                "file": files_out[0]["etc_name"] if len(files_out) == 1 else None,
                "status": None,
                "reason": subject,
                "now": summary["now"],
                "missing": summary["missing"],
                "stations": {s: len(summary["stations"][s]["missing"]) for s in stations},
                "files": files_out,
            },
        )
        channels = alert_channels(inventory)
        summary["alert_failed"] = [c for c in channels if c not in summary["alert"]]

    for s, r in summary["stations"].items():
        details = {k: v for k, v in r.items() if k != "missing"}
        details.update(now=summary["now"], missing=r["missing"])
        if r["missing"]:
            details.update(alert=summary["alert"], alert_failed=summary["alert_failed"])
        audit(
            conn,
            "reconcile",
            _station_message(s, r),
            level="WARNING" if r["missing"] else "INFO",
            station=s,
            details=details,
            ids=ids,
        )
    return summary
