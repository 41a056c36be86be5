"""Last values (seed 001, 4.2.4): harvest, refine and publish only the newest sample of
every device, into ``smartem_rt.last_device_output`` (one row per device and indicator,
overwritten in place, no history), for the per-indicator views and the real-time layers.

The harvested, hourly chain cannot say "now": the hour being filled is never stored. So
each source is asked for its newest sample (Whale ``/last``, the last minutes of an
InfluxDB measurement), refined with the same definitions and calibration as the hours,
and written only where it is newer than what the row holds: a replayed or late refresh
never moves a value back in time. Then every row older than two hours at ``now`` is
marked ``value_stale`` (it leaves the views), every younger one fresh; all in one
transaction, so the views never show half a refresh. A device that fails is audited and
the others are refreshed; its old row simply ages into staleness.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import psycopg

from stationflow.collect.harvest import HarvestError
from stationflow.collect.influxdb import EPOCH, parse_time_ns
from stationflow.config import SensorNetwork
from stationflow.refine.records.definitions import defs_for
from stationflow.refine.records.refiner import Calibration, RefinedRow, refine, wanted_for
from stationflow.refine.records.samples import SAMPLES, RawRecord, RecordError, document
from stationflow.state.audit import RunIds, audit

log = logging.getLogger("stationflow.refine.records.last")
STEP = "last"
STALE_AFTER = timedelta(hours=2)  # seed 001: no fresh value in 2 hours
FUTURE_SKEW = timedelta(minutes=5)  # a sample later than now + this: a clock gone wrong

_UPSERT = """
INSERT INTO smartem_rt.last_device_output AS t
    (unique_id, device_id, device_name, name, label, unit, time, value_raw, value_stale,
     value, lon, lat)
VALUES (%(unique_id)s, %(device_id)s, %(device_name)s, %(name)s, %(label)s, %(unit)s,
        %(time)s, %(value_raw)s, %(value_stale)s, %(value)s, %(lon)s, %(lat)s)
ON CONFLICT (device_id, name) DO UPDATE SET
    unique_id = EXCLUDED.unique_id,
    device_name = EXCLUDED.device_name,
    label = EXCLUDED.label,
    unit = EXCLUDED.unit,
    time = EXCLUDED.time,
    value_raw = EXCLUDED.value_raw,
    value_stale = EXCLUDED.value_stale,
    value = EXCLUDED.value,
    lon = COALESCE(EXCLUDED.lon, t.lon),
    lat = COALESCE(EXCLUDED.lat, t.lat),
    insert_time = now()
WHERE EXCLUDED.time > t.time
RETURNING (xmax = 0)
"""
_STALE = """
UPDATE smartem_rt.last_device_output
   SET value_stale = CASE WHEN time < %(cutoff)s THEN 1 ELSE 0 END
 WHERE value_stale <> CASE WHEN time < %(cutoff)s THEN 1 ELSE 0 END
"""
_COUNTS = """
SELECT count(*) FILTER (WHERE value_stale = 0), count(*) FILTER (WHERE value_stale = 1)
  FROM smartem_rt.last_device_output WHERE device_id = ANY (%(devices)s)
"""


class LastSource(Protocol):
    """What a harvester source offers the Last Values ETL."""

    harvester: str

    def devices(self) -> list[int]: ...

    def last_record(self, device_id: int, now: datetime | None = None) -> RawRecord | None: ...


@dataclass
class RefreshSummary:
    network: str
    now: datetime
    devices: int = 0  # listed by the sources
    sampled: int = 0  # with a last sample that could be read
    no_data: list[int] = field(default_factory=list)  # no sample at all
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0  # values whose sample is not newer than the row's
    out_of_range: int = 0
    fresh: int = 0  # the network's rows after the refresh
    stale: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # device -> why
    dead_sources: dict[str, str] = field(default_factory=dict)  # harvester -> why
    skipped: dict[str, str] = field(default_factory=dict)  # indicator -> why not computed

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (an XCom, an audit row): ids as sorted lists, times as text."""
        d = dict(self.__dict__)
        d["now"] = self.now.isoformat()
        d["failed_devices"] = sorted(d.pop("failed"))
        d["no_data"] = sorted(self.no_data)
        return d


def newest_sample_time(record: RawRecord) -> datetime:
    """When the record's newest sample was taken (Josene ``time`` fields, the ASE ``time``
    column); RecordError when there is none that reads as RFC 3339."""
    doc = document(record)
    if record.device_type == "ase":
        columns, values = doc.get("columns"), doc.get("values")
        if not isinstance(columns, list) or "time" not in columns or not isinstance(values, list):
            raise RecordError(f"last record of device {record.device_id}: no 'time' column")
        at = columns.index("time")
        times = [v[at] for v in values if isinstance(v, list) and len(v) > at]
    else:
        samples = doc.get("timeseries")
        samples = samples if isinstance(samples, list) else []
        times = [s.get("time") for s in samples if isinstance(s, dict)]
    try:
        newest = max(parse_time_ns(t) for t in times if isinstance(t, str))
    except ValueError as e:  # max() of nothing, or a time that does not read
        raise RecordError(
            f"last record of device {record.device_id}: no sample time ({e})"
        ) from None
    return EPOCH + timedelta(microseconds=newest // 1000)


def raw_means(record: RawRecord, indicators: Sequence[str]) -> dict[str, float]:
    """Indicator -> the mean of its raw input over the record's valid samples, for the
    indicators read from exactly one raw field (``value_raw``, as the original kept it);
    the others (several inputs, models) have no single raw value."""
    defs = defs_for(record.device_type)
    single = {}
    for name in wanted_for(defs, indicators):
        inputs = defs.indicators[name].inputs
        if len(inputs) == 1 and inputs[0] in defs.raw:
            single[name] = inputs[0]
    if not single:
        return {}
    kind = SAMPLES[defs.device_type]
    fields = sorted(set(single.values()))
    cols = kind.combine([kind.parse(record, document(record), defs, fields)], defs, fields)
    out = {}
    for name, raw in single.items():
        column = cols.values[raw]
        if np.isfinite(column).any():
            out[name] = float(np.nanmean(column))
    return out


def _last(
    source: LastSource, device_id: int, now: datetime
) -> tuple[int, RawRecord | None, str | None]:
    try:
        return device_id, source.last_record(device_id, now), None
    except HarvestError as exc:
        return device_id, None, str(exc)
    except Exception as exc:  # a bug for one device must not stop the others
        log.exception("last value of device %s failed", device_id)
        return device_id, None, f"{type(exc).__name__}: {exc}"


def _fetch(
    source: LastSource, now: datetime, workers: int, summary: RefreshSummary
) -> list[tuple[str, RawRecord]]:
    """The source's last records; failures go into the summary."""
    try:
        devices = list(source.devices())
    except Exception as exc:
        summary.dead_sources[source.harvester] = f"cannot list devices: {exc}"
        return []
    summary.devices += len(devices)
    with ThreadPoolExecutor(max(1, min(workers, len(devices))), "last") as pool:
        outcomes = list(pool.map(lambda d: _last(source, d, now), devices))
    records = []
    for device_id, record, error in outcomes:
        if error is not None:
            summary.failed[device_id] = f"{source.harvester}: {error}"
        elif record is None:
            summary.no_data.append(device_id)
        else:
            records.append((source.harvester, record))
    if devices and all(d in summary.failed for d in devices):
        summary.dead_sources[source.harvester] = "no device answered"
    return records


def refresh(
    conn: psycopg.Connection,
    network: SensorNetwork,
    sources: Sequence[LastSource],
    *,
    now: datetime,
    calibration: Calibration | None = None,
    ids: RunIds | None = None,
    workers: int = 4,
) -> RefreshSummary:
    """Refresh the network's last values as they stand at ``now`` (staleness, and samples
    dated after it are refused); ``calibration``: the gas models, built by the caller.
    The sources are read before the transaction opens, so a slow peer holds no lock."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError("refresh commits once: give it a connection outside a transaction")
    now = now.astimezone(UTC)
    summary = RefreshSummary(network.id, now)
    newest: dict[int, tuple[datetime, RawRecord]] = {}
    for source in sources:
        for harvester, record in _fetch(source, now, workers, summary):
            try:
                at = newest_sample_time(record)
            except RecordError as exc:
                summary.failed[record.device_id] = f"{harvester}: {exc}"
                continue
            if at > now + FUTURE_SKEW:
                summary.failed[record.device_id] = (
                    f"{harvester}: newest sample at {at:%Y-%m-%d %H:%M:%S}Z is in the future"
                )
                continue
            if record.device_id not in newest or at > newest[record.device_id][0]:
                newest[record.device_id] = (at, record)
    rows = _rows(network, newest, calibration or Calibration(), now, summary)
    with conn.transaction():
        # one writer at a time: the stale pass touches every network's rows
        conn.execute("LOCK TABLE smartem_rt.last_device_output IN SHARE ROW EXCLUSIVE MODE")
        _write(conn, rows, summary)
        conn.execute(_STALE, {"cutoff": now - STALE_AFTER})
        configured = [d.id for d in network.devices]
        devices = sorted({*newest, *summary.failed, *summary.no_data, *configured})
        summary.fresh, summary.stale = conn.execute(_COUNTS, {"devices": devices}).fetchone()
        _audit(conn, summary, ids)
    return summary


def _rows(
    network: SensorNetwork,
    newest: Mapping[int, tuple[datetime, RawRecord]],
    calibration: Calibration,
    now: datetime,
    summary: RefreshSummary,
) -> list[dict[str, Any]]:
    """The upsert parameters of every refined value (refine failures go to the summary)."""
    records = [record for _, record in newest.values()]
    result = refine(records, network.indicators, calibration)
    for record, why in result.rejected:
        summary.failed[record.device_id] = why
    summary.out_of_range = len(result.out_of_range)
    summary.skipped = dict(result.skipped)
    for name, why in sorted(result.skipped.items()):
        log.warning("%s: %s not computed: %s", network.id, name, why)
    names = {d.id: d.name for d in network.devices}
    raw: dict[int, dict[str, float]] = {}
    for record in records:
        try:
            raw[record.device_id] = raw_means(record, network.indicators)
        except RecordError:  # rejected by the refiner as well
            raw[record.device_id] = {}
    out = []
    for r in result.rows:
        at = newest[r.device_id][0]
        out.append(_row(r, at, names.get(r.device_id), raw[r.device_id].get(r.name), now))
    summary.sampled = len({r.device_id for r in result.rows})
    return out


def _row(
    r: RefinedRow, at: datetime, name: str | None, value_raw: float | None, now: datetime
) -> dict[str, Any]:
    return {
        "unique_id": f"{r.device_id}-{r.name}",
        "device_id": r.device_id,
        "device_name": name,
        "name": r.name,
        "label": r.label,
        "unit": r.unit,
        "time": at,
        "value_raw": value_raw,
        "value_stale": int(at < now - STALE_AFTER),
        "value": r.value,
        "lon": r.lon,
        "lat": r.lat,
    }


def _write(
    conn: psycopg.Connection, rows: Sequence[dict[str, Any]], summary: RefreshSummary
) -> None:
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(_UPSERT, rows, returning=True)
        written = []
        while True:
            written += [new for (new,) in cur.fetchall()]
            if not cur.nextset():
                break
    summary.inserted = sum(written)
    summary.updated = len(written) - summary.inserted
    summary.unchanged = len(rows) - len(written)


def _audit(conn: psycopg.Connection, summary: RefreshSummary, ids: RunIds | None) -> None:
    net = summary.network
    for harvester, why in sorted(summary.dead_sources.items()):
        details = {"harvester": harvester}
        audit(
            conn, STEP, f"{harvester}: {why}", level="ERROR", station=net, ids=ids, details=details
        )
    for device_id, why in sorted(summary.failed.items()):
        message = f"device {device_id}: no last value: {why}"
        details = {"device_id": device_id}
        audit(conn, STEP, message, level="ERROR", station=net, ids=ids, details=details)
    level = "WARNING" if summary.failed or summary.dead_sources or summary.no_data else "INFO"
    message = (
        f"last values at {summary.now:%Y-%m-%d %H:%M}Z: {summary.sampled} of"
        f" {summary.devices} devices, {summary.inserted + summary.updated} values written"
    )
    audit(conn, STEP, message, level=level, station=net, ids=ids, details=summary.as_dict())
