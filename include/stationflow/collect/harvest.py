"""Harvest orchestration for the record chain: which hours each device needs, fetched
concurrently, stored in batches, failures kept to the device that failed.

Each device's window starts at its newest committed hour (resume after any crash) and
never later than the look-back window (default 48 h), where hours are fetched again and
stored again only if their content changed: late data is not lost. The hour still being
filled is never asked for. A device's hours reach the writer in time order and batches
commit in order, so what is committed for a device is always a prefix of its walk and the
trigger-kept progress never passes an hour that is not stored.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg

from stationflow.collect import raw_store
from stationflow.collect.raw_store import RawHour, Rejected, WriteResult
from stationflow.state.audit import RunIds, audit

log = logging.getLogger("stationflow.collect.harvest")
HOUR = timedelta(hours=1)
STEP = "harvest"


class HarvestError(Exception):
    """This device (or the whole peer) cannot be harvested now; the message says why."""


class Source(Protocol):
    harvester: str

    def devices(self) -> list[int]: ...

    def fetch_device(
        self, device_id: int, since: datetime, until: datetime
    ) -> Iterator[RawHour | Rejected]: ...


def floor_hour(t: datetime) -> datetime:
    """The start of t's hour as a plain UTC datetime (Airflow hands out pendulum ones)."""
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, t.hour, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime


def windows(
    devices: Sequence[int],
    progress: Mapping[int, datetime],
    *,
    until: datetime,
    lookback: timedelta,
    since: datetime | None = None,
) -> dict[int, Window]:
    """Per device the hours [since, until) to (re)check; ``since`` given (a backfill of a
    past interval) replaces the resume point and the look-back."""
    out = {}
    for d in devices:
        if since is not None:
            start = floor_hour(since)
        else:
            start = until - lookback
            if d in progress:
                start = min(start, floor_hour(progress[d]) + HOUR)
        if start < until:
            out[d] = Window(start, until)
    return out


@dataclass
class HarvestReport:
    harvester: str
    until: datetime
    devices: list[int] = field(default_factory=list)
    written: WriteResult = field(default_factory=WriteResult)
    fetched: int = 0  # hour documents received
    batches: int = 0
    failures: dict[int, str] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        w = self.written
        return {
            "harvester": self.harvester,
            "until": self.until.isoformat(),
            "devices": len(self.devices),
            "fetched": self.fetched,
            "inserted": w.inserted,
            "updated": w.updated,
            "unchanged": w.unchanged,
            "quarantined": w.quarantined,
            "failed_devices": sorted(self.failures),
            "batches": self.batches,
        }


@dataclass(frozen=True)
class _Done:
    device_id: int
    error: str | None = None


def harvest(
    conn: psycopg.Connection,
    source: Source,
    *,
    until: datetime,
    lookback: timedelta = timedelta(hours=48),
    since: datetime | None = None,
    now: datetime | None = None,
    workers: int = 4,
    batch_hours: int = 200,
    network: str | None = None,
    ids: RunIds | None = None,
) -> HarvestReport:
    """Harvest every device of ``source`` up to ``until`` (never past the last whole hour)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError(
            "harvest commits batch by batch: give it a connection outside a transaction"
        )
    now = now or datetime.now(UTC)
    until = min(floor_hour(until), floor_hour(now))
    report = HarvestReport(source.harvester, until)
    try:
        report.devices = source.devices()
    except HarvestError as exc:
        with conn.transaction():
            audit(
                conn,
                STEP,
                f"{source.harvester}: cannot list devices: {exc}",
                level="ERROR",
                station=network,
                ids=ids,
            )
        raise
    with conn.transaction():
        done = raw_store.progress(conn, source.harvester)
    plan = windows(
        report.devices,
        done,
        until=until,
        lookback=lookback,
        since=since,
    )
    items: queue.Queue[RawHour | Rejected | _Done] = queue.Queue(maxsize=max(8, workers * 8))
    stop = threading.Event()

    def put(item: RawHour | Rejected | _Done) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def walk(device_id: int, w: Window) -> None:
        try:
            for item in source.fetch_device(device_id, w.since, w.until):
                if not put(item):
                    return
        except HarvestError as exc:
            put(_Done(device_id, str(exc)))
            return
        except Exception as exc:  # a bug for one device must not stop the others either
            log.exception("harvesting device %s failed", device_id)
            put(_Done(device_id, f"{type(exc).__name__}: {exc}"))
            return
        put(_Done(device_id))

    hours: list[RawHour] = []
    rejected: list[Rejected] = []

    def flush() -> None:
        if not hours and not rejected:
            return
        with conn.transaction():
            result = raw_store.write_batch(conn, hours, rejected)
            for r in rejected:
                audit(
                    conn,
                    STEP,
                    f"quarantined device {r.device_id} day {r.day} hour {r.hour}: {r.error}",
                    level="ERROR",
                    station=network,
                    ids=ids,
                    details={
                        "harvester": r.harvester,
                        "source": r.source,
                        "device_id": r.device_id,
                        "day": r.day,
                        "hour": r.hour,
                    },
                )
                report.rejected.append(r.error)
        report.written.add(result)
        report.batches += 1
        hours.clear()
        rejected.clear()

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="harvest") as pool:
        for device_id, w in plan.items():
            pool.submit(walk, device_id, w)
        pending = len(plan)
        try:
            while pending:
                item = items.get()
                if isinstance(item, _Done):
                    pending -= 1
                    if item.error:
                        report.failures[item.device_id] = item.error
                    continue
                report.fetched += 1
                (rejected if isinstance(item, Rejected) else hours).append(item)
                if len(hours) + len(rejected) >= batch_hours:
                    flush()
            flush()
        finally:
            stop.set()

    with conn.transaction():
        for device_id, error in sorted(report.failures.items()):
            audit(
                conn,
                STEP,
                f"{source.harvester}: device {device_id} not harvested: {error}",
                level="ERROR",
                station=network,
                ids=ids,
                details={"harvester": source.harvester, "device_id": device_id},
            )
        audit(
            conn,
            STEP,
            f"{source.harvester}: harvested up to {until:%Y-%m-%d %H:%M}Z",
            level="WARNING" if report.failures or report.rejected else "INFO",
            station=network,
            ids=ids,
            details=report.summary(),
        )
    return report
