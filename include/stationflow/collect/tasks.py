"""What the collection DAGs' tasks call: resolve inventory, settings and endpoints, then run
one collector for one device with the state database. Plain functions, testable without
Airflow (``context`` may be None)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
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
