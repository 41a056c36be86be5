"""Housekeeping: the daily self-check of the foundations (is the inventory valid, is the
state schema current?) and the pruning of Airflow's metadata database (``airflow db clean``).

A station team learns of a broken stations.yaml or a forgotten ``stationflow db up``
from a failed run in the UI and an audit row, not from a chain failing at midnight.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stationflow.config import load_inventory
from stationflow.errors import PermanentError
from stationflow.settings import load_settings
from stationflow.state.audit import RunIds, audit
from stationflow.state.db import connect, state_db_url
from stationflow.state.migrate import status

log = logging.getLogger("stationflow.housekeeping")


class SchemaNotCurrent(PermanentError):
    pass


def inventory_summary(path: Path | None = None) -> dict[str, Any]:
    """Validate the inventory (raises ConfigError) and describe it in a few numbers."""
    path = Path(path or load_settings().config_path)
    inv = load_inventory(path)
    return {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "stations": [s.id for s in inv.stations],
        "etc_files": sum(len(s.files) for s in inv.stations),
        "sensor_networks": [n.id for n in inv.sensor_networks],
        "devices": sum(len(n.devices) for n in inv.sensor_networks),
    }


def check_schema(url: str | None = None) -> list[str]:
    """Names of the applied migrations; raises SchemaNotCurrent when any is pending."""
    settings = load_settings()
    states = status(url or state_db_url(settings), settings.sql_dir)
    pending = [s.migration.path.name for s in states if s.applied_at is None]
    if pending:
        raise SchemaNotCurrent(f"pending migrations {pending}: run `stationflow db up`")
    return [s.migration.path.name for s in states]


def record_check(
    summary: dict[str, Any], migrations: list[str], ids: RunIds, url: str | None = None
) -> int:
    """One audit row describing today's check; returns its id."""
    with connect(url) as conn:
        return audit(
            conn,
            "housekeeping.inventory",
            f"inventory ok: {len(summary['stations'])} stations, {summary['etc_files']} ETC files,"
            f" {summary['devices']} devices; schema at {migrations[-1] if migrations else 'none'}",
            details={**summary, "migrations": migrations},
            ids=ids,
        )


# ------------------------------------------------------------ airflow db clean

#: Airflow Variable holding how many days of metadata ``airflow_db_clean`` keeps.
DB_CLEAN_RETENTION_VARIABLE = "stationflow_db_clean_retention_days"
DB_CLEAN_DEFAULT_DAYS = 90
DB_CLEAN_MIN_DAYS = 7  # never less: the reconciliation and the UI look back a week


class InvalidRetention(PermanentError, ValueError):
    pass


def db_clean_retention_days(value: object = None) -> int:
    """The retention from the Variable's text (None: the default); at least 7 whole days."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DB_CLEAN_DEFAULT_DAYS
    try:
        days = int(str(value).strip())
    except ValueError:
        raise InvalidRetention(
            f"Variable {DB_CLEAN_RETENTION_VARIABLE}={value!r}: expected a whole number of days"
        ) from None
    if days < DB_CLEAN_MIN_DAYS:
        raise InvalidRetention(
            f"Variable {DB_CLEAN_RETENTION_VARIABLE}={days}: keep at least {DB_CLEAN_MIN_DAYS}"
            " days of Airflow metadata"
        )
    return days


def db_clean_cutoff(logical_date: datetime, retention_days: int) -> datetime:
    """Rows older than this go: the run's logical date minus the retention, in UTC."""
    if logical_date.tzinfo is None:
        raise ValueError("logical_date must be timezone-aware")
    return (logical_date - timedelta(days=retention_days)).astimezone(UTC)


def airflow_executable() -> str:
    """The ``airflow`` next to this interpreter (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "airflow"
    return str(beside) if beside.exists() else "airflow"


def db_clean_argv(cutoff: datetime, *, airflow: str | None = None) -> list[str]:
    """``airflow db clean`` for everything before ``cutoff``: no prompt, no archive tables,
    and a non-zero exit when a table fails (Airflow would otherwise only log it)."""
    if cutoff.tzinfo is None:
        raise ValueError("cutoff must be timezone-aware")
    return [
        airflow or airflow_executable(),
        "db",
        "clean",
        "--clean-before-timestamp",
        cutoff.astimezone(UTC).isoformat(),
        "--yes",
        "--skip-archive",
        "--error-on-cleanup-failure",
    ]


def run_db_clean(
    cutoff: datetime,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600,
    airflow: str | None = None,
) -> dict[str, Any]:
    """Run ``airflow db clean`` (a subprocess with this environment) and report it."""
    argv = db_clean_argv(cutoff, airflow=airflow)
    started = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=dict(env or os.environ)
    )
    for line in (done.stdout + done.stderr).splitlines()[-200:]:
        log.info("airflow db clean: %s", line)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-2000:]
        raise RuntimeError(f"airflow db clean exited {done.returncode}: {tail}")
    return {
        "cutoff": cutoff.astimezone(UTC).isoformat(),
        "argv": argv[1:],
        "seconds": round(time.monotonic() - started, 1),
    }
