"""Refine one station stream for one period from what collection landed: the scheduled path.

The fragments of a stream are the landed files under ``<landing>/<station>/<logger>[/<table>]``
whose time span touches the period (the ledger knows both); assembling them is the same as
``stationflow assemble``. Outputs go to ``<home>/etc/<station>/``; what the DAGs pass on is
ledger ids only.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from stationflow.config import EtcFile, Inventory, Station, load_inventory
from stationflow.errors import PermanentError
from stationflow.refine.run import assemble_and_record, make_request
from stationflow.settings import load_settings
from stationflow.state.audit import RunIds, audit

# a row stamped at the period's edge may sit in a fragment that ends or starts there
EDGE = timedelta(minutes=1)


class NoFragments(PermanentError):
    """Nothing was collected for a daily stream's whole day: a person has to look."""


def stream_id(f: EtcFile) -> str:
    return f"{f.type}_L{f.logger_number:02d}_F{f.file_number:02d}"


def stream(station: Station, sid: str) -> EtcFile:
    for f in station.files:
        if stream_id(f) == sid:
            return f
    raise KeyError(f"{station.id} has no ETC file stream {sid}")


def folder_of(landing: Path, station: Station, f: EtcFile) -> Path:
    folder = landing / station.id / f.logger
    return folder / f.table if f.table else folder


def period_utc(station: Station, day: date, half_hour: int | None) -> tuple[datetime, datetime]:
    """The period as UTC instants: the ETC day (00:00, 24:00] or one half-hour of it."""
    local0 = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(
        hours=station.utc_offset_hours
    )
    if half_hour is None:
        return local0, local0 + timedelta(days=1)
    start = local0 + timedelta(minutes=30 * half_hour)
    return start, start + timedelta(minutes=30)


def fragments_for(
    conn: psycopg.Connection, landing: Path, station: Station, f: EtcFile, start, end
) -> list[Path]:
    rows = conn.execute(
        "SELECT path FROM stationflow.fragment WHERE station = %s AND status <> 'quarantined'"
        " AND path LIKE %s AND first_ts <= %s AND last_ts >= %s ORDER BY id",
        (station.id, f"{folder_of(landing, station, f)}/%", end + EDGE, start - EDGE),
    ).fetchall()
    return [Path(r[0]) for r in rows if Path(r[0]).exists()]


def assemble_stream(
    inv: Inventory,
    station_id: str,
    sid: str,
    day: date,
    *,
    half_hour: int | None = None,
    ids: RunIds | None = None,
) -> list[int]:
    """Assemble the stream's files of ``day`` (or of one half-hour) and record them.

    Returns the output_file ids (a new version only when the bytes changed)."""
    from stationflow.state.db import connect

    settings = load_settings()
    station = inv.station(station_id)
    f = stream(station, sid)
    start, end = period_utc(station, day, half_hour if f.half_hourly else None)
    with connect() as conn:
        paths = fragments_for(conn, settings.landing_dir, station, f, start, end)
        if not paths:
            what = f"{sid} of {day}" + (f" half-hour {half_hour}" if half_hour is not None else "")
            audit(
                conn,
                "refine.assemble",
                f"{station_id}: no fragment collected for {what}",
                level="INFO" if f.half_hourly else "ERROR",
                station=station_id,
                ids=ids,
            )
            conn.commit()
            if f.half_hourly:
                return []  # reconciliation reports the half-hour if it stays empty
            raise NoFragments(f"{station_id}: nothing collected for {what}")
    req = make_request(
        station_id,
        f.type,
        f.logger_number,
        f.file_number,
        day,
        settings.home / "etc" / station_id,
        inventory=inv,
        # the inventory's extension if it names one; else the layout's (.dat for toa5)
        extension=f.extension if "extension" in f.model_fields_set and not f.half_hourly else None,
        quarantine_dir=settings.home / "quarantine" / station_id,
    )
    req = replace(req, quarantine_copies=True, half_hour=half_hour if f.half_hourly else None)
    result = assemble_and_record(req, paths, ids=ids)
    return [int(o.report["ledger_id"]) for o in result.outputs]


def run_assemble(station_id: str, sid: str, context) -> list[int]:
    """The DAG task: the period comes from the run's data interval."""
    inv = load_inventory()
    station = inv.station(station_id)
    start = context["data_interval_start"]
    ids = RunIds.from_context(context)
    if stream(station, sid).half_hourly:
        day, k = half_hour_before(start, station)
        return assemble_stream(inv, station_id, sid, day, half_hour=k, ids=ids)
    return assemble_stream(inv, station_id, sid, etc_day(start, station), ids=ids)


def etc_day(interval_start: datetime, station: Station) -> date:
    """The ETC day a daily run is for: the local date its data interval starts on."""
    return (interval_start.astimezone(UTC) + timedelta(hours=station.utc_offset_hours)).date()


def half_hour_before(interval_start: datetime, station: Station) -> tuple[date, int]:
    """(ETC day, half-hour index) of the last half-hour that ended before ``interval_start``.

    A half-hourly run works on the half-hour before its own interval: collection has had
    the whole interval to land it."""
    local = interval_start.astimezone(UTC) + timedelta(hours=station.utc_offset_hours)
    local = local.replace(tzinfo=None) - timedelta(minutes=30)
    k = (local.hour * 60 + local.minute) // 30
    return local.date(), k
