"""What the collection DAGs' tasks call: resolve inventory, settings and endpoints, then run
one collector for one device with the state database. Plain functions, testable without
Airflow (``context`` may be None)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from stationflow.config import Inventory, load_inventory
from stationflow.settings import load_settings
from stationflow.state.audit import RunIds
from stationflow.state.db import connect


def _device(inv: Inventory | None, station_id: str, logger_id: str):
    inv = inv or load_inventory()
    station = inv.station(station_id)
    return station, station.logger(logger_id)


def scan_loggernet(
    station_id: str,
    logger_id: str,
    context: Mapping[str, Any] | None = None,
    inv: Inventory | None = None,
) -> dict:
    from stationflow.collect.loggernet import scan

    settings = load_settings()
    station, logger = _device(inv, station_id, logger_id)
    with connect() as conn:
        summary = scan(
            conn,
            station,
            logger,
            home=settings.home,
            landing=settings.landing_dir,
            ids=RunIds.from_context(context),
        )
    return summary.as_dict()


def poll_modbus(
    station_id: str,
    logger_id: str,
    context: Mapping[str, Any] | None = None,
    inv: Inventory | None = None,
    now: datetime | None = None,
) -> dict:
    """One poll; a failed poll is audited (a visible hole) and fails the task."""
    from stationflow.collect.modbus import poll_logger
    from stationflow.connections import endpoint

    settings = load_settings()
    station, logger = _device(inv, station_id, logger_id)
    with connect() as conn:
        return poll_logger(
            conn,
            station,
            logger,
            now=now or datetime.now(UTC),
            spool=settings.spool_dir,
            landing=settings.landing_dir,
            endpoint=endpoint(logger.collect.connection_id, 502),
            ids=RunIds.from_context(context),
            raise_on_failure=True,
        )


def pull_ftp(
    station_id: str,
    logger_id: str,
    context: Mapping[str, Any] | None = None,
    inv: Inventory | None = None,
) -> dict:
    from stationflow.collect.ftp_pull import pull

    settings = load_settings()
    station, logger = _device(inv, station_id, logger_id)
    with connect() as conn:
        return pull(
            conn,
            station,
            logger,
            landing=settings.landing_dir,
            spool=settings.spool_dir,
            now=datetime.now(UTC),
            ids=RunIds.from_context(context),
        )


def check_health(
    station_id: str,
    logger_id: str,
    context: Mapping[str, Any] | None = None,
    inv: Inventory | None = None,
) -> dict:
    from stationflow.collect.health import check_device

    station, logger = _device(inv, station_id, logger_id)
    with connect() as conn:
        return check_device(
            conn, station, logger, now=datetime.now(UTC), ids=RunIds.from_context(context)
        )


def collect_station(
    station_id: str, context: Mapping[str, Any] | None = None, inv: Inventory | None = None
) -> dict:
    """The daily DAG's last pass over one station: LoggerNet folders, FTP servers, and the
    Modbus spool days that are over (polling itself stays with icos_poll)."""
    from stationflow.collect.modbus import land_closed_days
    from stationflow.config import FtpPullCollect, LoggerNetCollect, ModbusCollect

    inv = inv or load_inventory()
    station = inv.station(station_id)
    settings = load_settings()
    out: dict[str, Any] = {}
    for lg in station.loggers:
        if isinstance(lg.collect, LoggerNetCollect):
            out[lg.id] = scan_loggernet(station_id, lg.id, context, inv)
        elif isinstance(lg.collect, FtpPullCollect):
            out[lg.id] = pull_ftp(station_id, lg.id, context, inv)
        elif isinstance(lg.collect, ModbusCollect):
            with connect() as conn:
                out[lg.id] = land_closed_days(
                    conn,
                    station,
                    lg,
                    now=datetime.now(UTC),
                    spool=settings.spool_dir,
                    landing=settings.landing_dir,
                    ids=RunIds.from_context(context),
                )
    return out


# ------------------------------------------------------------- the record chain's harvest


def _interval(context: Mapping[str, Any] | None) -> tuple[datetime | None, datetime | None, bool]:
    """(start, end, is_backfill) of the run's data interval; all None outside Airflow."""
    if not context:
        return None, None, False
    dag_run = context.get("dag_run")
    run_type = str(getattr(dag_run, "run_type", "") or "")
    start = context.get("data_interval_start") or getattr(dag_run, "data_interval_start", None)
    end = context.get("data_interval_end") or getattr(dag_run, "data_interval_end", None)
    return start, end, run_type.lower().endswith("backfill")


def harvest_source(
    network_id: str,
    harvester: str,
    context: Mapping[str, Any] | None = None,
    inv: Inventory | None = None,
    now: datetime | None = None,
) -> dict:
    """One harvester of a sensor network up to the run's interval end (a backfill run: just
    its interval). Devices that fail are audited and skipped; if every device failed (peer
    down, token refused) the task fails, so it is retried and alerts."""
    from stationflow.collect.harvest import HarvestError, harvest
    from stationflow.collect.sources import source_for

    inv = inv or load_inventory()
    net = inv.network(network_id)
    cfg = next((h for h in net.harvest if h.harvester == harvester), None)
    if cfg is None:
        raise KeyError(f"network {network_id!r} has no harvester {harvester!r}")
    now = now or datetime.now(UTC)
    start, end, backfill = _interval(context)
    with connect() as conn:
        report = harvest(
            conn,
            source_for(cfg),
            until=end or now,
            since=start if backfill else None,
            lookback=timedelta(hours=cfg.lookback_hours),
            now=now,
            workers=cfg.concurrency,
            network=network_id,
            ids=RunIds.from_context(context),
        )
    if report.devices and len(report.failures) == len(report.devices):
        raise HarvestError(
            f"{harvester}: no device could be harvested; first error:"
            f" {next(iter(report.failures.values()))}"
        )
    return report.summary()
